"""Reading public trace files, once for every loader: finding, opening, decoding, CSV rows, values, caching.

Every loader of ``envs/workloads`` (Azure Functions 2019 and 2021, Azure LLM
inference 2023, Azure VM vmtable and CPU readings) reads through this module,
so they share one behaviour:

* **Finding** (:func:`find_trace`): an absolute path is used as given; any
  other path is looked up in the folders of ``$CLOUDGYM_TRACES``
  (``os.pathsep``-separated), then in ``../shared/traces`` beside the
  checkout, then relative to the checkout itself, never relative to the
  working directory. A missing trace names every place it looked.
* **Opening** (:func:`text_lines`): gzip, xz and bzip2 are recognised by their
  magic bytes (the public datasets ship compressed), whatever the name.
* **Decoding**: UTF-8, strictly; a byte-order mark at the start is dropped;
  any other undecodable byte is an error naming its line and column.
* **Rows** (:func:`csv_rows`): the header is checked column by column, every
  row must have the header's width, blank lines are skipped.
* **Values** (:func:`parse_float`, :func:`parse_int`,
  :func:`utc_seconds`): finite, inside the range the loader declares;
  timestamps are read as UTC whatever the machine's time zone.
* **Caching** (:class:`TraceCache`): a parsed trace is kept per process,
  keyed by each file's resolved path, size, modification time (ns) and
  inode, so a file rewritten in place is read again.

Every problem with a file's content raises one :class:`TraceFormatError`
naming the file, the line, the column where there is one, and the problem.
Nothing here knows a trace format; the loaders own their columns and rules.
"""

from __future__ import annotations

import bz2
import contextlib
import csv
import datetime
import functools
import gzip
import lzma
import math
import os
import re
import zlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Generic, TypeVar

TRACES_ENV = "CLOUDGYM_TRACES"
"""Environment variable: folders (``os.pathsep``-separated) searched for a trace named by a relative path."""

CHECKOUT = Path(__file__).resolve().parents[2]
"""The repository root this module lives in (``envs/workloads/traces.py`` -> ``.``)."""

SHARED_TRACES = CHECKOUT.parent / "shared" / "traces"
"""The shared traces folder beside the checkout (``../shared/traces``)."""

MAX_TRACE_SECONDS = 366 * 86_400
"""Longest span a trace timestamp may have from its trace's start, s: the public traces span 2 weeks (Functions
2021) to 30 days (VM); a larger value is a corrupt field, and would make a loader allocate per second or minute."""


class TraceFormatError(ValueError):
    """A trace file does not follow its format; the message names the file, line, column (if any) and problem."""

    def __init__(self, path: str | os.PathLike[str], line: int, problem: str, column: str | None = None) -> None:
        where = f"{path}, line {line}" + (f", column {column}" if column is not None else "")
        super().__init__(f"{where}: {problem}")
        self.path = Path(path)
        self.line = line
        self.column = column
        self.problem = problem


# ----------------------------------------------------------------------------- finding


def trace_candidates(name: str | os.PathLike[str]) -> list[Path]:
    """Where :func:`find_trace` looks for ``name``, in order (the working directory is never one of them)."""
    path = Path(name).expanduser()
    if path.is_absolute():
        return [path]
    folders = [Path(d).expanduser() for d in os.environ.get(TRACES_ENV, "").split(os.pathsep) if d]
    # The checkout itself last: older configs wrote "../shared/traces/x.csv", relative to the repository root.
    return [*(d / path for d in folders), SHARED_TRACES / path, CHECKOUT / path]


def find_trace(name: str | os.PathLike[str]) -> Path:
    """The resolved path of trace file or folder ``name`` (see the module docstring for where it looks)."""
    places = trace_candidates(name)
    for place in places:
        if place.exists():
            return place.resolve()
    hint = "" if Path(name).is_absolute() else f" (set {TRACES_ENV} to its folder, or give an absolute path)"
    raise FileNotFoundError(f"trace {str(name)!r} not found; looked in: {', '.join(map(str, places))}{hint}")


# ----------------------------------------------------------------------------- opening and decoding

_MAGIC: tuple[tuple[bytes, str], ...] = ((b"\x1f\x8b", "gzip"), (b"\xfd7zXZ\x00", "xz"), (b"BZh", "bzip2"))


def compression(path: str | os.PathLike[str]) -> str | None:
    """``"gzip"``, ``"xz"`` or ``"bzip2"`` from the file's first bytes, or None for plain text."""
    with open(path, "rb") as f:
        head = f.read(6)
    return next((kind for magic, kind in _MAGIC if head.startswith(magic)), None)


@contextlib.contextmanager
def _binary(path: Path, kind: str | None) -> Iterator[Iterable[bytes]]:
    with open(path, "rb") as raw:
        if kind == "gzip":
            with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                yield f
        elif kind == "xz":
            with lzma.LZMAFile(raw) as g:
                yield g
        elif kind == "bzip2":
            with bz2.BZ2File(raw) as h:
                yield h
        else:
            yield raw


def text_lines(path: str | os.PathLike[str]) -> Iterator[str]:
    """The file's lines as text (line endings kept), decompressed and decoded as UTF-8, streamed.

    A byte-order mark opening the file is dropped; a byte that is not UTF-8,
    or a corrupt or truncated compressed stream, raises :class:`TraceFormatError`
    naming the line (and, for a bad byte, its column: the character position).
    """
    file = Path(path)
    kind = compression(file)
    with _binary(file, kind) as stream:
        lines = iter(stream)
        number = 0
        while True:
            try:
                raw = next(lines)
            except StopIteration:
                return
            except (OSError, EOFError, lzma.LZMAError, zlib.error) as exc:
                raise TraceFormatError(file, number + 1, f"the {kind} stream is corrupt or truncated ({exc})") from None
            number += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                column = len(raw[: exc.start].decode("utf-8", "replace")) + 1
                raise TraceFormatError(
                    file, number, f"byte {raw[exc.start]:#04x} is not UTF-8 (trace files are UTF-8 text)", str(column)
                ) from None
            if number == 1 and text.startswith("\ufeff"):
                text = text[1:]
            if "\x00" in text:  # no text trace holds one: a corrupt or binary file
                raise TraceFormatError(file, number, "NUL byte in the text", str(text.index("\x00") + 1))
            yield text


def csv_rows(
    path: str | os.PathLike[str], columns: Sequence[str], *, header: bool | None = True
) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of a CSV trace, streamed, every row ``len(columns)`` wide; blank lines skipped.

    ``header``: True, the first line must name ``columns`` (spaces around names
    ignored); None, a first line whose first field is ``columns[0]`` (any case)
    is a header and must name them all (the VM files ship without one).
    """
    file = Path(path)
    reader = csv.reader(text_lines(file))
    want = [c.lower() for c in columns] if header is None else list(columns)
    first = True
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            if first and header:
                raise TraceFormatError(file, 1, f"empty file (expected a header row {','.join(columns)})") from None
            return
        except csv.Error as exc:
            raise TraceFormatError(file, reader.line_num, f"not CSV ({exc})") from None
        line = reader.line_num
        if first:
            first = False
            got = [f.strip().lower() if header is None else f.strip() for f in fields]
            if header or (header is None and got and got[0] == want[0]):
                if got != want:
                    _header_error(file, fields, columns)
                continue
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        if len(fields) != len(columns):
            raise TraceFormatError(
                file, line, f"expected {len(columns)} fields, got {len(fields)} (columns {_short(columns)})"
            )
        yield line, fields


def _short(names: Sequence[str]) -> str:
    return ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")


def _header_error(file: Path, found: Sequence[str], columns: Sequence[str]) -> None:
    bad = next((i for i, (f, c) in enumerate(zip(found, columns)) if f.strip().lower() != c.lower()), None)
    where = (
        f"column {bad + 1} is {found[bad].strip()!r}, expected {columns[bad]!r}"
        if bad is not None
        else f"{len(found)} columns, expected {len(columns)}"
    )
    raise TraceFormatError(
        file, 1, f"unexpected header {_short(found)!r} ({where}); expected {_short(columns)!r} ({len(columns)} columns)"
    )


# ----------------------------------------------------------------------------- values


def parse_float(
    path: str | os.PathLike[str], line: int, column: str, text: str, *, low: float = 0.0, high: float = math.inf
) -> float:
    """A finite number in [low, high], or a :class:`TraceFormatError` naming the field."""
    try:
        value = float(text)
    except ValueError:
        raise TraceFormatError(path, line, f"{text!r} is not a number", column) from None
    if not math.isfinite(value):
        raise TraceFormatError(path, line, f"{text!r} is not a finite number", column)
    if not low <= value <= high:
        raise TraceFormatError(path, line, f"{text!r} is outside [{low:g}, {high:g}]", column)
    return value


def parse_int(path: str | os.PathLike[str], line: int, column: str, text: str, *, low: int, high: int) -> int:
    """An integer written as one (no point, no exponent) in [low, high], or a :class:`TraceFormatError`."""
    try:
        value = int(text)
    except ValueError:
        raise TraceFormatError(path, line, f"{text!r} is not an integer", column) from None
    if not low <= value <= high:
        raise TraceFormatError(path, line, f"{text!r} is outside [{low}, {high}]", column)
    return value


_TIMESTAMP = re.compile(r"\s*(\d{4}-\d{2}-\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?\s*")


@functools.lru_cache(maxsize=4096)
def _day_seconds(day: str) -> int:
    return (datetime.date.fromisoformat(day) - datetime.date(1970, 1, 1)).days * 86_400


def utc_seconds(text: str) -> float:
    """Seconds since 1970-01-01 UTC of ``YYYY-MM-DD HH:MM:SS[.fraction]`` read as UTC (no zone, no offset).

    The machine's time zone plays no part (a zone with a daylight-saving change
    inside the trace would shift every later gap by an hour). Raises ValueError
    saying what is wrong.
    """
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        raise ValueError("expected YYYY-MM-DD HH:MM:SS[.fraction], in UTC")
    day, hour, minute, second, fraction = match.groups()
    h, m, s = int(hour), int(minute), int(second)
    if h > 23 or m > 59 or s > 59:
        raise ValueError(f"time {hour}:{minute}:{second} out of range")
    base = _day_seconds(day) + 3600 * h + 60 * m + s
    return float(base) + (float("0." + fraction) if fraction else 0.0)


# ----------------------------------------------------------------------------- caching

T = TypeVar("T")


def file_stamp(path: str | os.PathLike[str]) -> tuple[str, int, int, int]:
    """(resolved path, size, modification time in ns, inode): what tells a rewritten file from the cached one."""
    resolved = Path(path).resolve()
    st = resolved.stat()
    return str(resolved), st.st_size, st.st_mtime_ns, st.st_ino


class TraceCache(Generic[T]):
    """Parsed traces kept per process (the ``maxsize`` most recently used), keyed by their files' stamps.

    A file rewritten in place changes size, modification time or inode and is
    parsed again; the stamp is taken before parsing, so a file changed while
    it is read is read again next time.
    """

    def __init__(self, maxsize: int = 4) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[Hashable, T] = OrderedDict()

    def get(self, files: Sequence[str | os.PathLike[str]], load: Callable[[], T], extra: Hashable = None) -> T:
        key = (tuple(file_stamp(f) for f in files), extra)
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = load()
        self._items[key] = value
        while len(self._items) > self.maxsize:
            self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        self._items.clear()
