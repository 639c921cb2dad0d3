"""The malformed-trace corpus (scripts/trace_robustness.py): no crash, nothing silently dropped, doubled or shifted.

Each case writes its files in ``tmp_path``, runs one of the four loaders and
must end as the case says: a TraceFormatError naming the file, line, column
and problem (or a FileNotFoundError listing where it looked), or a result
equal to the clean file's (or to the case's stated expectation).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scripts import load_script

corpus = load_script("trace_robustness")
CASES = corpus.cases()


@pytest.mark.parametrize("case", CASES, ids=[f"{c.loader}-{c.name}" for c in CASES])
def test_case_ends_named_or_correct(case, tmp_path: Path) -> None:
    kind, detail = corpus.outcome(case, tmp_path)
    assert kind == ("named" if case.error is not None else "correct"), detail


def test_the_issue_cases_are_in_the_corpus() -> None:
    names = {(c.loader, c.name) for c in CASES}
    for loader in corpus.LOADERS:
        for name in (
            "gzip",
            "xz",
            "UTF-8 byte-order mark",
            "non-UTF-8 byte",
            "header renamed",
            "numeric field '1e30'",
            "numeric field 'nan'",
            "numeric field '-3'",
            "duplicated row",
            "rewritten in place",
            "missing file",
        ):
            assert (loader, name) in names, (loader, name)
    assert ("faas2019", "duplicated function rows") in names
    assert ("vm", "avg_cpu above max_cpu") in names
    assert ("vm", "empty readings file beside a full one") in names
    assert ("vm", "vmdeleted 10^12") in names
    assert ("llm", "DST change read under TZ=America/New_York") in names


def test_table_counts_every_case(capsys: pytest.CaptureFixture[str]) -> None:
    results = corpus.main()
    out = capsys.readouterr().out
    assert f"| **all** | {len(CASES)} | " in out
    assert all(kind in ("named", "correct") for _, kind, _ in results)
