"""How long each chapter took to execute in the book build, and a check of it.

Two roles in one file:

* a Sphinx extension (``_config.yml``: ``sphinx.local_extensions``) that, when the
  build finishes, writes ``_build/execution.json``: for every executed notebook its
  execution time, whether it succeeded and the error, as MyST-NB recorded them, and
  the slowest cell (from the timestamps the notebook client stores in each executed
  cell, ``_build/jupyter_execute``);
* a command that ``make test`` runs after the executed build::

      python tools/execution_record.py [--limit 180] [--cell-limit 120]

  It fails (exit 1) when a notebook of ``_toc.yml`` was not executed, failed, took
  longer than ``--limit`` seconds, or has a cell longer than ``--cell-limit``, and
  prints one line per chapter either way.

A stalled cell cannot cost more than two minutes: ``_config.yml`` sets the notebook
client's per-cell timeout to 120 s, and a cell that reaches it fails the build with
the chapter's name and a preview of the cell (``CellTimeoutError``).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "_build" / "execution.json"


def cell_seconds(notebook: dict) -> list[tuple[int, float]]:
    """``(index of the code cell, seconds)`` from the client's timestamps, for every timed code cell."""
    out = []
    code = [c for c in notebook.get("cells", []) if c.get("cell_type") == "code"]
    for i, cell in enumerate(code):
        stamps = cell.get("metadata", {}).get("execution", {})
        start, end = stamps.get("iopub.execute_input"), stamps.get("shell.execute_reply")
        if start and end:
            seconds = (datetime.fromisoformat(end.replace("Z", "+00:00"))
                       - datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()
            out.append((i, seconds))
    return out


def slowest_cell(executed: Path) -> dict | None:
    """The slowest code cell of an executed notebook: its index, seconds and first line."""
    if not executed.exists():
        return None
    notebook = json.loads(executed.read_text(encoding="utf-8"))
    timed = cell_seconds(notebook)
    if not timed:
        return None
    index, seconds = max(timed, key=lambda t: t[1])
    code = [c for c in notebook["cells"] if c.get("cell_type") == "code"]
    text = code[index]["source"]
    text = text if isinstance(text, str) else "".join(text)
    return {"code_cell": index, "seconds": round(seconds, 2), "first_line": text.strip().splitlines()[0][:80]}


def _write_record(app, exception) -> None:
    from myst_nb.sphinx_ import NbMetadataCollector

    rows = {}
    for docname in sorted(app.env.found_docs):
        data = NbMetadataCollector.get_exec_data(app.env, docname)
        if not data:
            continue
        executed = Path(app.outdir).parent / "jupyter_execute" / f"{docname}.ipynb"
        rows[docname] = {"seconds": round(float(data["runtime"] or 0.0), 2), "succeeded": bool(data["succeeded"]),
                         "error": data.get("error"), "method": data.get("method"),
                         "slowest_cell": slowest_cell(executed)}
    if rows:
        path = Path(app.outdir).parent / "execution.json"
        path.write_text(json.dumps(rows, indent=1), encoding="utf-8")


def setup(app):
    app.connect("build-finished", _write_record)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def check(record: Path, limit: float, cell_limit: float) -> int:
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
        slow = row.get("slowest_cell") or {}
        print(f"{docname:45s} {row['seconds']:7.1f} s   slowest cell: code cell {slow.get('code_cell', '?')}, "
              f"{slow.get('seconds', float('nan')):.1f} s ({slow.get('first_line', '')})")
        if not row["succeeded"]:
            problems.append(f"{docname}: execution failed ({row['error']})")
        if row["seconds"] > limit:
            problems.append(f"{docname}: executed in {row['seconds']:.0f} s, over the limit of {limit:.0f} s")
        if slow.get("seconds", 0.0) > cell_limit:
            problems.append(f"{docname}: code cell {slow['code_cell']} took {slow['seconds']:.0f} s, "
                            f"over {cell_limit:.0f} s ({slow['first_line']})")
    total = sum(r["seconds"] for r in rows.values())
    print(f"{len(rows)} notebooks executed in {total:.0f} s")
    for p in problems:
        print("FAILED:", p)
    return 1 if problems else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", type=Path, default=RECORD)
    parser.add_argument("--limit", type=float, default=180.0, help="seconds per notebook (default 180)")
    parser.add_argument("--cell-limit", type=float, default=120.0, help="seconds per cell (default 120)")
    args = parser.parse_args(argv)
    return check(args.record, args.limit, args.cell_limit)


if __name__ == "__main__":
    sys.exit(main())
