"""tools/execution_record.py: the check that `make test` runs on the executed build's record."""

import json
import sys

from tests.book_files import ROOT, toc_notebooks

sys.path.insert(0, str(ROOT / "tools"))
import execution_record  # noqa: E402

DOCNAMES = [p.relative_to(ROOT).with_suffix("").as_posix() for p in toc_notebooks()]


def record(tmp_path, rows):
    path = tmp_path / "execution.json"
    path.write_text(json.dumps(rows))
    return path


def row(seconds, succeeded=True, error=None):
    return {"seconds": seconds, "succeeded": succeeded, "error": error, "method": "force"}


def test_every_chapter_executed_in_time_passes(tmp_path, capsys):
    path = record(tmp_path, {d: row(40.0) for d in DOCNAMES})
    assert execution_record.check(path, limit=180) == 0
    out = capsys.readouterr().out
    assert all(d in out for d in DOCNAMES) and f"{len(DOCNAMES)} notebooks executed" in out


def test_a_slow_failed_or_missing_chapter_fails(tmp_path, capsys):
    rows = {d: row(40.0) for d in DOCNAMES}
    slow, failed, missing = DOCNAMES[0], DOCNAMES[1], DOCNAMES[2]
    rows[slow] = row(181.0)
    rows[failed] = row(10.0, succeeded=False, error="CellTimeoutError")
    del rows[missing]
    assert execution_record.check(record(tmp_path, rows), limit=180) == 1
    out = capsys.readouterr().out
    assert f"{slow}: executed in 181 s, over the limit of 180 s" in out
    assert f"{failed}: execution failed (CellTimeoutError)" in out
    assert f"{missing}: not executed in the build" in out


def test_no_record_fails(tmp_path, capsys):
    assert execution_record.check(tmp_path / "none.json", limit=180) == 1
    assert "build the book" in capsys.readouterr().out
