"""How long each chapter took to execute in the book build, and a check of it.

Two roles in one file:

* a Sphinx extension (``_config.yml``: ``sphinx.local_extensions``) that, when the
  build finishes, writes ``_build/execution.json``: for every executed notebook its
  execution time, whether it succeeded and the error, as MyST-NB recorded them;
* a command that ``make test`` runs after the executed build::

      python tools/execution_record.py [--limit 180]

  It fails (exit 1) when a notebook of ``_toc.yml`` was not executed, failed or took
  longer than ``--limit`` seconds, and prints one line per chapter either way.

A stalled cell cannot cost more than two minutes: ``_config.yml`` sets the notebook
client's per-cell timeout to 120 s, and a cell that reaches it fails the build with
the chapter's name and a preview of the cell (``CellTimeoutError``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "_build" / "execution.json"


def _write_record(app, exception) -> None:
    from myst_nb.sphinx_ import NbMetadataCollector

    rows = {}
    for docname in sorted(app.env.found_docs):
        data = NbMetadataCollector.get_exec_data(app.env, docname)
        if not data:
            continue
        rows[docname] = {"seconds": round(float(data["runtime"] or 0.0), 2), "succeeded": bool(data["succeeded"]),
                         "error": data.get("error"), "method": data.get("method")}
    if rows:
        path = Path(app.outdir).parent / "execution.json"
        path.write_text(json.dumps(rows, indent=1), encoding="utf-8")


def setup(app):
    app.connect("build-finished", _write_record)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def check(record: Path, limit: float) -> int:
    sys.path.insert(0, str(ROOT))
    from tests.book_files import toc_notebooks

    if not record.exists():
        print(f"{record} is missing: build the book with its notebooks executed first (make book)")
        return 1
    rows = json.loads(record.read_text(encoding="utf-8"))
    problems = []
    for path in toc_notebooks():
        docname = path.relative_to(ROOT).with_suffix("").as_posix()
        row = rows.get(docname)
        if row is None:
            problems.append(f"{docname}: not executed in the build")
            continue
        print(f"{docname:45s} {row['seconds']:7.1f} s")
        if not row["succeeded"]:
            problems.append(f"{docname}: execution failed ({row['error']})")
        if row["seconds"] > limit:
            problems.append(f"{docname}: executed in {row['seconds']:.0f} s, over the limit of {limit:.0f} s")
    total = sum(r["seconds"] for r in rows.values())
    print(f"{len(rows)} notebooks executed in {total:.0f} s")
    for p in problems:
        print("FAILED:", p)
    return 1 if problems else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", type=Path, default=RECORD)
    parser.add_argument("--limit", type=float, default=180.0, help="seconds per notebook (default 180)")
    args = parser.parse_args(argv)
    return check(args.record, args.limit)


if __name__ == "__main__":
    sys.exit(main())
