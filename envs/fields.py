"""Type, finiteness and range checks of config fields, read from each config dataclass's annotations.

Every env config (and a nested config such as
:class:`~cloudgym.envs.workloads.fleet.ShockSpec`) calls :func:`check_fields`
first in its ``__post_init__``, so that a value of the wrong type or out of
range fails at ``gym.make`` with an error that names the class, the field,
the value given and what is allowed, before any other check compares it or
any array is sized by it::

    LLMRouterConfig.slots: got '4' (str); expected an integer
    LLMRouterConfig.instances: got 0 (int); expected a tuple or list of str
    GPUPowerCapConfig.cap_delay_s: got 1000000000; expected an integer in [0, 3600] (...)

What each annotation accepts:

* ``bool``: ``True``/``False`` (or a numpy bool) only; the string ``'False'``
  is refused rather than read as true;
* ``int``: Python or numpy integers, not bools and not floats (``4.0`` is
  refused: a float where a count is meant is usually a unit mistake);
* ``float``: any real number (ints included, stored as float), finite;
* ``str``; ``Literal[...]``: one of the listed values;
* ``X | None``: None or an ``X``;
* ``tuple[X, ...]`` and ``tuple[X, Y]``: a tuple or list (YAML gives lists),
  stored as a tuple, each element checked, fixed lengths enforced;
* a frozen config dataclass: an instance, or a mapping of its fields (YAML
  gives dicts), built and checked by its own ``__post_init__``.

Values are stored normalised (numpy scalars as Python scalars, ints in float
fields as floats, lists as tuples), so a valid config behaves the same
whatever container or scalar type it came in.

Ranges are declared per class in ``FIELD_RANGES`` (``{field: Range(...)}``,
applied to each element of a tuple field) with the reason for each bound:
the upper bounds keep one env's arrays and loops within what one machine
runs. Checks that relate several fields stay in the config's
``__post_init__`` (:func:`check_config`-style, naming the fields).

This module imports nothing of cloudgym, so workloads' nested configs use it
as well as the envs.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union

import numpy as np


@dataclasses.dataclass(frozen=True)
class Range:
    """Allowed interval of a numeric field (each element of a tuple field); None = unbounded on that side."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    """Exclude ``low`` itself (``(low, ...``)."""
    high_open: bool = False
    """Exclude ``high`` itself (``..., high)``)."""
    why: str = ""
    """Why the bound is there (shown in the error), e.g. the arrays or loops it sizes."""

    def contains(self, value: float) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    def describe(self) -> str:
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        low = "-inf" if self.low is None else _number(self.low)
        high = "inf" if self.high is None else _number(self.high)
        text = f"in {left}{low}, {high}{right}"
        return f"{text} ({self.why})" if self.why else text


def positive(high: float | None = None, why: str = "") -> Range:
    """(0, high]."""
    return Range(0, high, low_open=True, why=why)


def at_least(low: float, high: float | None = None, why: str = "") -> Range:
    """[low, high]."""
    return Range(low, high, why=why)


def unit_interval(low_open: bool = False, high_open: bool = False) -> Range:
    """A share or probability: [0, 1] (ends excluded as asked)."""
    return Range(0, 1, low_open=low_open, high_open=high_open)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e16 else repr(float(x))


class FieldError(Exception):
    """Internal: a problem with one value, before the class and field are prefixed."""

    def __init__(self, kind: type[Exception], message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def _show(value: Any) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


_HINTS: dict[type, dict[str, Any]] = {}
"""Resolved annotations of each config class (resolving them costs more than checking the values)."""


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def check_fields(config: Any) -> None:
    """Check and normalise every init field of a frozen config dataclass from its annotation and FIELD_RANGES.

    Raises TypeError (wrong type) or ValueError (non-finite, not a choice,
    wrong length, out of range) whose message starts with
    ``ClassName.field:`` and gives the value and what is allowed.
    """
    cls = type(config)
    hints = _hints(cls)
    ranges: Mapping[str, Range] = getattr(cls, "FIELD_RANGES", {})
    for field in dataclasses.fields(config):
        if not field.init or field.name not in hints:
            continue
        value = getattr(config, field.name)
        try:
            checked = _check(hints[field.name], value)
            bound = ranges.get(field.name)
            if bound is not None:
                _check_range(bound, checked)
        except FieldError as err:
            raise err.kind(f"{cls.__name__}.{field.name}: {err.message}") from None
        if checked is not value:
            object.__setattr__(config, field.name, checked)


def _check_range(bound: Range, value: Any) -> None:
    if value is None or isinstance(value, str | bool):
        return
    if isinstance(value, tuple):
        for i, item in enumerate(value):
            try:
                _check_range(bound, item)
            except FieldError as err:
                raise FieldError(err.kind, f"element {i}: {err.message}") from None
        return
    if isinstance(value, int | float) and not bound.contains(value):
        raise FieldError(ValueError, f"got {value!r}; expected a value {bound.describe()}")


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return {"int": "an integer", "float": "a finite real number", "bool": "a bool (True or False)"}.get(
            tp.__name__, f"a {tp.__name__}"
        )
    return str(tp).replace("typing.", "")


def _check(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool | np.bool_):
            return bool(value)
        raise FieldError(TypeError, f"got {_show(value)}; expected a bool (True or False)")
    if tp is int:
        if isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
            return int(value)
        hint = " (give a whole number as an int, not a float)" if isinstance(value, float | np.floating) else ""
        raise FieldError(TypeError, f"got {_show(value)}; expected an integer{hint}")
    if tp is float:
        if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_):
            try:
                number = float(value)
            except OverflowError:
                raise FieldError(ValueError, f"got {_show(value)}; expected a finite real number") from None
            if not math.isfinite(number):
                raise FieldError(ValueError, f"got {value!r}; expected a finite real number")
            return value if type(value) is float else number
        raise FieldError(TypeError, f"got {_show(value)}; expected a real number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise FieldError(TypeError, f"got {_show(value)}; expected a str")
    if origin is Literal:
        choices = typing.get_args(tp)
        if any(type(value) is type(c) and value == c for c in choices):
            return value
        kind = ValueError if isinstance(value, str) else TypeError
        raise FieldError(kind, f"got {_show(value)}; expected one of {', '.join(map(repr, choices))}")
    if origin is Union or origin is types.UnionType:
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise FieldError(TypeError, f"got None; expected {_type_name(tp)}")
        others = [a for a in args if a is not type(None)]
        errors = []
        for arm in others:
            try:
                return _check(arm, value)
            except FieldError as err:
                errors.append(err)
        if len(others) == 1:
            raise errors[0]
        raise FieldError(TypeError, f"got {_show(value)}; expected {_type_name(tp)}")
    if origin is tuple:
        return _check_tuple(tp, value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            names = {f.name for f in dataclasses.fields(tp) if f.init}
            unknown = sorted(str(k) for k in value if k not in names)
            if unknown:
                raise FieldError(
                    TypeError, f"{tp.__name__} has no field {', '.join(unknown)} (fields: {', '.join(sorted(names))})"
                )
            try:
                return tp(**value)
            except (TypeError, ValueError) as err:
                raise FieldError(type(err), str(err)) from None
        raise FieldError(TypeError, f"got {_show(value)}; expected a {tp.__name__} or a mapping of its fields")
    return value  # an annotation this checker does not know (none in cloudgym's configs): left to __post_init__


def _check_tuple(tp: Any, value: Any) -> tuple[Any, ...]:
    args = typing.get_args(tp)
    variadic = len(args) == 2 and args[1] is Ellipsis
    item_types = (args[0],) if variadic else args
    shown = ", ".join(_type_name(a).removeprefix("an ").removeprefix("a ") for a in item_types)
    if not isinstance(value, tuple | list):
        what = f"a tuple or list of {shown}" if variadic else f"a tuple or list of {len(args)} ({shown})"
        raise FieldError(TypeError, f"got {_show(value)}; expected {what}")
    if not variadic and len(value) != len(args):
        raise FieldError(ValueError, f"got {len(value)} values {tuple(value)!r}; expected {len(args)} ({shown})")
    out = []
    for i, item in enumerate(value):
        try:
            out.append(_check(args[0] if variadic else args[i], item))
        except FieldError as err:
            raise FieldError(err.kind, f"element {i}: {err.message}") from None
    result = tuple(out)
    if isinstance(value, tuple) and all(a is b for a, b in zip(result, value)):
        return value
    return result
