"""The malformed-trace corpus: every loader against broken, compressed and tricky files.

    python scripts/trace_robustness.py

Writes each case's files to a temporary folder, runs the loader and sorts the
outcome: ``named`` (a TraceFormatError naming the file, the expected line and
column, or a FileNotFoundError saying where it looked), ``correct`` (accepted,
and the result equals the loader's result on the clean file, or the stated
expectation), ``crash`` (any other exception, or an error that names the
wrong place) and ``silent`` (accepted, but the input was malformed or the
result is wrong). Prints a table per loader; ``tests/workloads/test_trace_corpus.py``
runs the same cases and fails on any crash or silent outcome;
``docs/robustness.md`` (section Traces) shows the table.
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import lzma
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cloudgym.envs.workloads import faas, llm, traces, vm

LOADERS = ("faas2019", "faas2021", "llm", "vm")
"""The four loaders: Azure Functions 2019 (day folders), 2021 (one file), Azure LLM 2023, Azure VM (a folder)."""


@dataclasses.dataclass(frozen=True)
class Case:
    """One input: files to write over the clean ones, how to load them and what must come out."""

    loader: str
    name: str
    files: dict[str, bytes | None]
    """File name -> content, written over the clean files (None deletes the clean file of that name)."""
    error: str | None = None
    """A regex the TraceFormatError (or FileNotFoundError) must match; None: the input must be accepted."""
    file: str | None = None
    """The file the error must name (default: the loader's main file)."""
    line: int | None = None
    column: str | None = None
    expect: Callable[[Any], bool] | None = None
    """What an accepted result must satisfy; None: equal to the clean files' result."""
    run: Callable[[Path], Any] | None = None
    """A custom run (rewrites, time zones, search paths); None: the loader on the folder."""


# ----------------------------------------------------------------------------- clean files

_2019_HEADER = "HashOwner,HashApp,HashFunction,Trigger," + ",".join(str(m) for m in range(1, 1441))
_DUR_HEADER = ",".join(faas._DURATION_HEADER)
_MEM_HEADER = ",".join(faas._MEMORY_HEADER)


def _minutes(counts: dict[int, str]) -> str:
    return ",".join(counts.get(m, "0") for m in range(1, 1441))


def _inv(owner: str, app: str, func: str, trigger: str, counts: dict[int, str]) -> str:
    return f"{owner},{app},{func},{trigger},{_minutes(counts)}"


INV = "invocations_per_function_md.anon.d01.csv"
DUR = "function_durations_percentiles.anon.d01.csv"
MEM = "app_memory_percentiles.anon.d01.csv"
F21 = "trace2021.csv"
LLM = "llm.csv"
TABLE = "vmtable.csv"
READINGS = "vm_cpu_readings-file-1-of-1.csv"

CLEAN: dict[str, dict[str, list[str]]] = {
    "faas2019": {
        INV: [
            _2019_HEADER,
            _inv("o1", "a1", "f1", "http", {1: "3", 5: "1"}),
            _inv("o1", "a1", "f2", "timer", {2: "2"}),
            _inv("o2", "a2", "f1", "queue", {10: "5"}),
        ],
        DUR: [_DUR_HEADER, "o1,a1,f1,1000,4,500,2000,1,1,1,1,1,1,1", "o1,a1,f2,4000,2,1000,9000,1,1,1,1,1,1,1"],
        MEM: [_MEM_HEADER, "o1,a1,10,100,1,1,1,1,1,1,1,1", "o2,a2,30,200,1,1,1,1,1,1,1,1"],
    },
    "faas2021": {
        F21: [
            "app,func,end_timestamp,duration",
            "a1,f1,0.5,0.25",
            "a2,f1,61.5,1.5",
            "a1,f2,130.25,10.0",
            "a1,f1,200.0,0.125",
        ]
    },
    "llm": {
        LLM: [
            "TIMESTAMP,ContextTokens,GeneratedTokens",
            "2023-11-16 18:17:03.9799600,4808,10",
            "2023-11-16 18:17:04.0319600,3180,8",
            "2023-11-16 18:17:06.5000000,110,27",
            "2023-11-16 18:17:10.0000000,7437,1",
        ]
    },
    "vm": {
        TABLE: [
            "vmA,subX,depX,0,600,90.0,30.0,80.0,Interactive,2,4",
            "vmB,subX,depY,300,900,50.0,10.0,40.0,Delay-insensitive,>24,>64",
        ],
        READINGS: [
            "timestamp,vmid,min_cpu,max_cpu,avg_cpu",
            "0,vmA,10.0,60.0,20.0",
            "300,vmA,5.0,90.0,40.0",
            "300,vmB,1.0,50.0,10.0",
            "600,vmA,10.0,60.0,30.0",
            "900,vmB,1.0,20.0,5.0",
        ],
    },
}
MAIN = {"faas2019": INV, "faas2021": F21, "llm": LLM, "vm": READINGS}
"""The file the generic cases break."""
NUMERIC = {
    "faas2019": (2, 5, "2"),
    "faas2021": (2, 2, "end_timestamp"),
    "llm": (2, 1, "ContextTokens"),
    "vm": (2, 3, "max_cpu"),
}
"""(row index in the main file, field index, column name) of a numeric field the generic cases break."""


def load(loader: str, folder: Path) -> Any:
    """The loader on a folder of the clean files' names (compressed names found by their suffix)."""
    if loader == "faas2019":
        return faas.load_azure2019(folder)
    if loader == "vm":
        return vm.load_vm_trace(*vm.trace_files(folder))
    name = MAIN[loader]
    path = next(p for p in sorted(folder.iterdir()) if p.name.startswith(name))
    return faas.load_azure2021(path) if loader == "faas2021" else llm.load_azure_llm_trace(path)


def _text(lines: list[str], end: str = "\n") -> bytes:
    return "".join(line + end for line in lines).encode()


def _same(a: Any, b: Any) -> bool:
    """Equal loader results (arrays bit for bit; the path a result records is not compared)."""
    if type(a) is not type(b):
        return False
    for field in dataclasses.fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if field.name == "path":
            continue
        if isinstance(x, np.ndarray):
            if x.dtype != y.dtype or not np.array_equal(x, y, equal_nan=True):
                return False
        elif x != y:
            return False
    return True


# ----------------------------------------------------------------------------- the cases


def _with_row(loader: str, row: int, text: str, name: str | None = None) -> dict[str, bytes]:
    lines = list(CLEAN[loader][name or MAIN[loader]])
    lines[row] = text
    return {name or MAIN[loader]: _text(lines)}


def _with_field(loader: str, value: str) -> dict[str, bytes]:
    row, field, _ = NUMERIC[loader]
    fields = CLEAN[loader][MAIN[loader]][row].split(",")
    fields[field] = value
    return _with_row(loader, row, ",".join(fields))


def _generic(loader: str) -> Iterator[Case]:
    main = MAIN[loader]
    lines = CLEAN[loader][main]
    clean = _text(lines)
    has_header = loader != "vm" or main == READINGS
    row, _, column = NUMERIC[loader]
    header_required = loader != "vm"
    yield Case(loader, "clean file", {})
    yield Case(loader, "gzip", {main: None, main + ".gz": gzip.compress(clean)})
    yield Case(loader, "xz", {main: None, main + ".xz": lzma.compress(clean)})
    yield Case(loader, "bzip2", {main: None, main + ".bz2": bz2.compress(clean)})
    yield Case(loader, "gzip under a plain name", {main: gzip.compress(clean)})
    yield Case(loader, "UTF-8 byte-order mark", {main: b"\xef\xbb\xbf" + clean})
    yield Case(loader, "CRLF line endings", {main: _text(lines, "\r\n")})
    yield Case(loader, "blank lines", {main: clean.replace(b"\n", b"\n\n", 2)})
    yield Case(loader, "no final newline", {main: clean.rstrip(b"\n")})
    bad = bytearray(clean)
    at = clean.index(b"\n", clean.index(b"\n") + 1) + 3  # third line, third byte
    bad[at] = 0xFF
    yield Case(loader, "non-UTF-8 byte", {main: bytes(bad)}, r"byte 0xff is not UTF-8", line=3, column="3")
    latin = _text([*lines[:2], lines[2].replace(lines[2][0], "é", 1)]).decode().encode("latin-1")
    yield Case(loader, "Latin-1 text", {main: latin}, "byte 0xe9 is not UTF-8", line=3, column="1")
    yield Case(loader, "UTF-16 file", {main: clean.decode().encode("utf-16")}, "is not UTF-8", line=1)
    yield Case(loader, "truncated gzip", {main: gzip.compress(clean)[:-12]}, "gzip stream is corrupt or truncated")
    yield Case(loader, "corrupt xz", {main: lzma.compress(clean)[:20] + b"\0" * 40}, "xz stream is corrupt")
    if header_required:
        yield Case(loader, "empty file", {main: b""}, "empty file", line=1)
        yield Case(loader, "header only", {main: _text(lines[:1])}, "no (invocation rows|requests|function rows)")
        yield Case(loader, "header missing", {main: _text(lines[1:])}, "unexpected header", line=1)
    else:
        yield Case(loader, "empty file", {main: b""}, "no reading rows", line=1)
        yield Case(loader, "header only", {main: _text(lines[:1])}, "no reading rows", line=1)
        yield Case(loader, "header missing (optional in the VM files)", {main: _text(lines[1:])})
    if has_header:
        renamed = lines[0].replace(lines[0].split(",")[1], "Renamed", 1)
        yield Case(loader, "header renamed", _with_row(loader, 0, renamed), r"column 2 is 'Renamed'", line=1)
    yield Case(
        loader, "extra field", _with_row(loader, row, lines[row] + ",7"), "expected .* fields, got", line=row + 1
    )
    short = lines[row].rsplit(",", 1)[0]
    yield Case(loader, "missing field", _with_row(loader, row, short), "expected .* fields, got", line=row + 1)
    yield Case(loader, "unterminated quote", _with_row(loader, row, lines[row] + ',"'), "(fields, got|not CSV)")
    for value, problem in [
        ("abc", "not an? (number|whole count|integer)"),
        ("", "not an? (number|whole count|integer)"),
        ("-3", "(outside|not a whole count)"),
        ("1e30", "(outside|not an integer|not a whole count)"),
        ("nan", "(not a finite|not an integer|not a whole count)"),
        ("inf", "(not a finite|not an integer|not a whole count)"),
        ("99999999999999999999", "(outside|not a whole count)"),
    ]:
        yield Case(loader, f"numeric field {value!r}", _with_field(loader, value), problem, line=row + 1, column=column)
    duplicated = [*lines[: row + 1], lines[row], *lines[row + 1 :]]
    yield Case(loader, "duplicated row", {main: _text(duplicated)}, "(twice|repeats|second reading)", line=row + 2)
    nul = _with_row(loader, row, lines[row].replace(",", ",\0", 1))
    yield Case(loader, "NUL byte in a field", nul, "NUL", line=row + 1, column=str(lines[row].index(",") + 2))
    yield Case(loader, "missing file", {}, "not found; looked in", run=_missing(loader))
    yield Case(loader, "rewritten in place", {}, run=_rewritten(loader), expect=lambda ok: ok is True)


def _missing(loader: str) -> Callable[[Path], Any]:
    def run(folder: Path) -> Any:
        if loader == "faas2019":
            return faas.cached_trace(str(folder / "absent"), "azure2019")
        if loader == "vm":
            return vm.cached_trace(str(folder / "absent"))
        target = str(folder / "absent.csv")
        return faas.cached_trace(target, "azure2021") if loader == "faas2021" else llm.load_azure_llm_trace(target)

    return run


def _cached(loader: str, folder: Path) -> Any:
    if loader == "faas2019":
        return faas.cached_trace(str(folder), "azure2019")
    if loader == "vm":
        return vm.cached_trace(str(folder))
    target = str(folder / MAIN[loader])
    return faas.cached_trace(target, "azure2021") if loader == "faas2021" else llm.load_azure_llm_trace(target)


def _rewritten(loader: str) -> Callable[[Path], bool]:
    """Load through the cache, rewrite the main file in place (same path, same size), load again."""

    def run(folder: Path) -> bool:
        before = _cached(loader, folder)
        path = folder / MAIN[loader]
        lines = list(CLEAN[loader][MAIN[loader]])
        # One field changed, the file's size kept: only the modification time tells the versions apart.
        old, new = {
            "faas2019": (",3,", ",4,"),
            "faas2021": ("a1", "a3"),
            "llm": ("3180", "3181"),
            "vm": ("20.0", "30.0"),
        }[loader]
        row = 2 if loader == "llm" else 1
        lines[row] = lines[row].replace(old, new, 1)
        stat = path.stat()
        path.write_bytes(_text(lines))
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a later write, as a clock would show
        after = _cached(loader, folder)
        fresh = load(loader, folder)
        return path.stat().st_size == stat.st_size and not _same(before, after) and _same(after, fresh)

    return run


def _specific() -> Iterator[Case]:
    # --- Functions 2019
    f19 = CLEAN["faas2019"]
    yield Case(
        "faas2019", "duplicated function rows", {INV: _text([*f19[INV], f19[INV][1]])}, "appears twice .*line 2", line=5
    )
    yield Case(
        "faas2019",
        "count 1e30",
        _with_row("faas2019", 1, _inv("o1", "a1", "f1", "http", {7: "1e30"})),
        "whole count",
        line=2,
        column="7",
    )
    yield Case(
        "faas2019",
        "count 1.5",
        _with_row("faas2019", 1, _inv("o1", "a1", "f1", "http", {7: "1.5"})),
        "whole count",
        line=2,
        column="7",
    )
    yield Case(
        "faas2019",
        "unknown trigger",
        _with_row("faas2019", 1, _inv("o1", "a1", "f1", "webhook", {})),
        "unknown Trigger",
        line=2,
        column="Trigger",
    )
    yield Case(
        "faas2019",
        "Average outside [Minimum, Maximum]",
        _with_row("faas2019", 1, "o1,a1,f1,3000,4,500,2000,1,1,1,1,1,1,1", DUR),
        r"outside \[Minimum",
        file=DUR,
        line=2,
        column="Average",
    )
    yield Case(
        "faas2019",
        "duplicated duration rows",
        {DUR: _text([*f19[DUR], f19[DUR][1]])},
        "appears twice",
        file=DUR,
        line=4,
    )
    yield Case(
        "faas2019", "duplicated memory rows", {MEM: _text([*f19[MEM], f19[MEM][2]])}, "appears twice", file=MEM, line=4
    )
    yield Case(
        "faas2019",
        "memory 1e30 MB",
        _with_row("faas2019", 1, "o1,a1,10,1e30,1,1,1,1,1,1,1,1", MEM),
        "outside",
        file=MEM,
        line=2,
        column="AverageAllocatedMb",
    )
    yield Case(
        "faas2019",
        "non-UTF-8 in the durations file",
        {DUR: _text(f19[DUR]).replace(b"o1,a1,f2", b"o1,a\xff,f2")},
        "not UTF-8",
        file=DUR,
        line=3,
        column="5",
    )
    yield Case(
        "faas2019",
        "side files gzip-compressed",
        {
            DUR: None,
            DUR + ".gz": gzip.compress(_text(f19[DUR])),
            MEM: None,
            MEM + ".xz": lzma.compress(_text(f19[MEM])),
        },
    )
    # --- Functions 2021
    f21 = CLEAN["faas2021"][F21]
    yield Case(
        "faas2021",
        "end_timestamp 1e30",
        _with_row("faas2021", 2, "a2,f1,1e30,1.5"),
        "outside",
        line=3,
        column="end_timestamp",
    )
    yield Case(
        "faas2021",
        "duration exceeds end_timestamp",
        _with_row("faas2021", 2, "a2,f1,1.5,61.5"),
        "start before 0",
        line=3,
        column="duration",
    )
    yield Case("faas2021", "empty app", _with_row("faas2021", 2, ",f1,61.5,1.5"), "empty app", line=3)
    yield Case("faas2021", "duplicated row far apart", {F21: _text([*f21, f21[1]])}, "repeats line 2", line=6)
    yield Case(
        "faas2021",
        "rows out of order (counted the same)",
        {F21: _text([f21[0], *reversed(f21[1:])])},
        expect=_faas2021_counts,
    )
    # --- LLM 2023
    rows = CLEAN["llm"][LLM]
    yield Case(
        "llm",
        "timestamp earlier than the previous row",
        {LLM: _text([rows[0], rows[2], rows[1], *rows[3:]])},
        "earlier",
        line=3,
        column="TIMESTAMP",
    )
    yield Case(
        "llm",
        "second 61",
        _with_row("llm", 2, "2023-11-16 18:17:61.0,3180,8"),
        "out of range",
        line=3,
        column="TIMESTAMP",
    )
    yield Case(
        "llm",
        "timestamp with a UTC offset",
        _with_row("llm", 2, "2023-11-16 18:17:04+01:00,3180,8"),
        "not a timestamp",
        line=3,
        column="TIMESTAMP",
    )
    yield Case(
        "llm",
        "day 31 of November",
        _with_row("llm", 2, "2023-11-31 18:17:04.0,3180,8"),
        "not a timestamp",
        line=3,
        column="TIMESTAMP",
    )
    yield Case(
        "llm",
        "tokens 0",
        _with_row("llm", 2, "2023-11-16 18:17:04.0319600,0,8"),
        r"outside \[1, ",
        line=3,
        column="ContextTokens",
    )
    yield Case(
        "llm",
        "tokens 2.5",
        _with_row("llm", 2, "2023-11-16 18:17:04.0319600,3180,2.5"),
        "not an integer",
        line=3,
        column="GeneratedTokens",
    )
    for zone, first, second, gap in [
        ("America/New_York", "2023-11-05 01:59:00", "2023-11-05 02:01:00", 120.0),  # clocks went back here
        ("America/New_York", "2023-03-12 01:59:00", "2023-03-12 03:01:00", 3720.0),  # clocks went forward here
        ("Europe/Berlin", "2023-10-29 02:30:00", "2023-10-29 03:30:00", 3600.0),
    ]:
        text = _text([rows[0], f"{first},10,5", f"{second},10,6"])
        yield Case("llm", f"DST change read under TZ={zone}", {LLM: text}, run=_in_zone(zone), expect=_gap(gap))
    yield Case("llm", "request class given by the caller", {}, run=_conversation, expect=lambda c: bool(np.all(c == 1)))
    yield Case("llm", "found under CLOUDGYM_TRACES by name", {}, run=_by_name)
    # --- VM
    table, readings = CLEAN["vm"][TABLE], CLEAN["vm"][READINGS]
    yield Case(
        "vm",
        "avg_cpu above max_cpu",
        _with_row("vm", 1, "0,vmA,10.0,60.0,70.0"),
        r"outside \[min_cpu",
        line=2,
        column="avg_cpu",
    )
    yield Case(
        "vm",
        "avg_cpu below min_cpu",
        _with_row("vm", 1, "0,vmA,10.0,60.0,5.0"),
        r"outside \[min_cpu",
        line=2,
        column="avg_cpu",
    )
    yield Case(
        "vm",
        "min_cpu above max_cpu",
        _with_row("vm", 1, "0,vmA,70.0,60.0,65.0"),
        "exceeds max_cpu",
        line=2,
        column="min_cpu",
    )
    yield Case(
        "vm",
        "empty readings file beside a full one",
        {"vm_cpu_readings-file-2-of-2.csv": b""},
        "no reading rows",
        file="vm_cpu_readings-file-2-of-2.csv",
        line=1,
    )
    yield Case(
        "vm",
        "vmdeleted 10^12",
        _with_row("vm", 1, "vmB,subX,depY,300,1000000000000,50.0,10.0,40.0,Delay-insensitive,>24,>64", TABLE),
        "outside",
        file=TABLE,
        line=2,
        column="vmdeleted",
    )
    yield Case(
        "vm",
        "vmdeleted before vmcreated",
        _with_row("vm", 1, "vmB,subX,depY,300,0,50.0,10.0,40.0,Delay-insensitive,>24,>64", TABLE),
        "before vmcreated",
        file=TABLE,
        line=2,
        column="vmdeleted",
    )
    yield Case(
        "vm",
        "avgcpu above maxcpu",
        _with_row("vm", 0, "vmA,subX,depX,0,600,20.0,30.0,20.0,Interactive,2,4", TABLE),
        "exceeds maxcpu",
        file=TABLE,
        line=1,
        column="avgcpu",
    )
    yield Case(
        "vm",
        "p95maxcpu above maxcpu",
        _with_row("vm", 0, "vmA,subX,depX,0,600,50.0,30.0,80.0,Interactive,2,4", TABLE),
        "exceeds maxcpu",
        file=TABLE,
        line=1,
        column="p95maxcpu",
    )
    yield Case(
        "vm", "duplicated vmid", {TABLE: _text([*table, table[0]])}, "appears twice", file=TABLE, line=3, column="vmid"
    )
    yield Case(
        "vm",
        "unknown vmcategory",
        _with_row("vm", 0, "vmA,subX,depX,0,600,90.0,30.0,80.0,Batch,2,4", TABLE),
        "is not one of",
        file=TABLE,
        line=1,
        column="vmcategory",
    )
    yield Case(
        "vm",
        "reading of an unknown VM",
        {READINGS: _text([*readings, "600,vmZ,1,2,1"])},
        "not in vmtable",
        line=7,
        column="vmid",
    )
    yield Case(
        "vm",
        "reading outside the VM's lifetime",
        {READINGS: _text([*readings, "3000,vmA,1,2,1"])},
        "outside the VM's lifetime",
        line=7,
        column="timestamp",
    )
    yield Case(
        "vm",
        "timestamp not a multiple of 300 s",
        {READINGS: _text([*readings, "601,vmA,1,2,1"])},
        "not a multiple",
        line=7,
        column="timestamp",
    )
    yield Case(
        "vm",
        "vmtable gzip, readings xz",
        {
            TABLE: None,
            TABLE + ".gz": gzip.compress(_text(table)),
            READINGS: None,
            READINGS + ".xz": lzma.compress(_text(readings)),
        },
    )


def _faas2021_counts(trace: faas.AppTrace) -> bool:
    return trace.app_ids == ("a1", "a2") and trace.invocations().tolist() == [3, 1] and trace.minutes == 4


def _in_zone(zone: str) -> Callable[[Path], Any]:
    def run(folder: Path) -> Any:
        saved = os.environ.get("TZ")
        os.environ["TZ"] = zone
        time.tzset()
        try:
            return load("llm", folder)
        finally:
            if saved is None:
                del os.environ["TZ"]
            else:
                os.environ["TZ"] = saved
            time.tzset()

    return run


def _gap(seconds: float) -> Callable[[llm.LLMTrace], bool]:
    return lambda trace: bool(np.diff(trace.arrival_s).tolist() == [seconds])


def _conversation(folder: Path) -> np.ndarray:
    trace = llm.load_azure_llm_trace(folder / LLM, request_class="conversation")
    return llm.trace_requests(trace, np.random.default_rng(0), n=3).request_class


def _by_name(folder: Path) -> Any:
    saved = os.environ.get(traces.TRACES_ENV)
    os.environ[traces.TRACES_ENV] = str(folder)
    try:
        return llm.load_azure_llm_trace(LLM)
    finally:
        if saved is None:
            del os.environ[traces.TRACES_ENV]
        else:
            os.environ[traces.TRACES_ENV] = saved


def cases() -> list[Case]:
    """Every case of the corpus, loader by loader."""
    out = [c for loader in LOADERS for c in _generic(loader)]
    return out + list(_specific())


# ----------------------------------------------------------------------------- running a case


def write(case: Case, folder: Path) -> None:
    """The clean files of the case's loader with the case's files written over them."""
    for name, lines in CLEAN[case.loader].items():
        (folder / name).write_bytes(_text(lines))
    for name, content in case.files.items():
        if content is None:
            (folder / name).unlink()
        else:
            (folder / name).write_bytes(content)


def outcome(case: Case, folder: Path) -> tuple[str, str]:
    """(``named`` | ``correct`` | ``crash`` | ``silent``, detail) of a case run in an empty folder."""
    traces_cache_reset()
    write(case, folder)
    try:
        result = case.run(folder) if case.run is not None else load(case.loader, folder)
    except traces.TraceFormatError as exc:
        return _named(case, folder, exc)
    except FileNotFoundError as exc:
        if case.error is not None and re.search(case.error, str(exc)):
            return "named", str(exc)
        return "crash", f"FileNotFoundError: {exc}"
    except Exception as exc:  # the corpus exists to find these: any other exception is a crash
        return "crash", f"{type(exc).__name__}: {exc}"
    if case.error is not None:
        return "silent", f"accepted, expected an error matching {case.error!r}"
    if case.expect is not None:
        return ("correct", "as expected") if case.expect(result) else ("silent", f"wrong result {result!r}")
    clean = Path(tempfile.mkdtemp(dir=folder))
    for name, lines in CLEAN[case.loader].items():
        (clean / name).write_bytes(_text(lines))
    reference = load(case.loader, clean)
    return ("correct", "equals the clean file's result") if _same(result, reference) else ("silent", "differs")


def _named(case: Case, folder: Path, exc: traces.TraceFormatError) -> tuple[str, str]:
    message = str(exc)
    if case.error is None:
        return "crash", f"refused a valid input: {message}"
    file = folder / (case.file or MAIN[case.loader])
    checks = [
        (re.search(case.error, message) is not None, f"problem {case.error!r}"),
        (exc.path.name.startswith(file.name) and str(exc.path) in message, f"file {file.name}"),
        (case.line is None or (exc.line == case.line and f"line {case.line}" in message), f"line {case.line}"),
        (
            case.column is None or (exc.column == case.column and f"column {case.column}" in message),
            f"column {case.column}",
        ),
    ]
    wrong = [what for ok, what in checks if not ok]
    return ("crash", f"misnamed (expected {', '.join(wrong)}): {message}") if wrong else ("named", message)


def traces_cache_reset() -> None:
    """Forget parsed traces, so a case never sees another's (each case's folder is new anyway)."""
    for cache in (faas._TRACES, llm._TRACES, vm._TRACES):
        cache.clear()


def table(results: list[tuple[Case, str, str]]) -> str:
    """The Markdown table: per loader, inputs tried and how they came out."""
    rows = [
        "| loader | inputs tried | named errors | accepted, correct | crashes | silent |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for loader in LOADERS:
        kinds = [kind for case, kind, _ in results if case.loader == loader]
        counts = [kinds.count(k) for k in ("named", "correct", "crash", "silent")]
        rows.append(f"| {loader} | {len(kinds)} | " + " | ".join(map(str, counts)) + " |")
    kinds = [kind for _, kind, _ in results]
    counts = [kinds.count(k) for k in ("named", "correct", "crash", "silent")]
    rows.append(f"| **all** | {len(kinds)} | " + " | ".join(map(str, counts)) + " |")
    return "\n".join(rows)


def main() -> list[tuple[Case, str, str]]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, case in enumerate(cases()):
            folder = Path(tmp) / f"case{i:03d}"
            folder.mkdir()
            kind, detail = outcome(case, folder)
            results.append((case, kind, detail))
    print(table(results))
    for case, kind, detail in results:
        if kind in ("crash", "silent"):
            print(f"{kind.upper()}: {case.loader} / {case.name}: {detail}")
    return results


if __name__ == "__main__":
    main()
