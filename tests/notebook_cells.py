"""Static analysis and partial execution of the book's notebooks, for the tests.

The dependency slice (``cell_names``, ``dependency_slice``: the earlier cells a set of
target cells needs) lives in :mod:`gramlib.views.cell_slice`, which the assignments
use too; it is re-exported here. ``execute`` runs such a slice in one fresh kernel.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from gramlib.views.cell_slice import cell_names, dependency_slice  # noqa: F401  (re-exported for the tests)

# A self-check call: ``gramlib.views.exercises.ch01.check_gap(answer)`` or ``ch01.check_gap(answer)``.
CHECK_CALL = re.compile(r"\bcheck_\w+\s*\(")


def source(cell) -> str:
    text = cell["source"]
    return text if isinstance(text, str) else "".join(text)


def code_cells(nb) -> list:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


_EXECUTE = """
import sys, time, nbclient, nbformat
from queue import Empty


def sliced(get_msg):
    # Wait for a message in slices of at most half a second. Under load, one long zmq poll
    # sometimes missed the wake-up of a message that had arrived and returned only at its
    # timeout (600 s), with the kernel idle all along; a fresh poll sees the message at once.
    async def get(timeout=None):
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            step = 0.5 if end is None else max(0.0, min(0.5, end - time.monotonic()))
            try:
                return await get_msg(timeout=step)
            except Empty:
                if end is not None and time.monotonic() >= end:
                    raise
    return get


class Client(nbclient.NotebookClient):
    async def async_start_new_kernel_client(self):
        kc = await super().async_start_new_kernel_client()
        for channel in (kc.shell_channel, kc.iopub_channel):
            channel.get_msg = sliced(channel.get_msg)
        return kc


nb = nbformat.read(sys.argv[1], as_version=4)
Client(nb, timeout=int(sys.argv[3]), kernel_name="python3", resources={"metadata": {"path": sys.argv[2]}}).execute()
nbformat.write(nb, sys.argv[1])
"""


def execute(cells, cwd: Path, timeout: int = 120):
    """Run code cells in order in one fresh kernel; return (executed notebook, seconds).

    The kernel draws figures inline, as on the website, even where the
    environment sets ``MPLBACKEND=Agg`` (ipykernel keeps a non-empty setting).
    The client runs in its own Python process and waits for each message in
    short polls: with one long poll, a client under load sometimes sat idle for
    its whole timeout (the kernel done, the reply not seen) before it read the
    reply. A cell that raises, or runs longer than ``timeout`` seconds (120, as
    in the book build: a stalled kernel fails in two minutes and the message
    shows the cell), fails the call with the client's traceback.
    """
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source(c)) for c in cells]
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cells.ipynb"
        nbformat.write(nb, path)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", _EXECUTE, str(path), str(cwd), str(timeout)],
                              env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode:
            raise AssertionError(f"executing {len(cells)} cells in {cwd} failed:\n{done.stderr[-6000:]}")
        return nbformat.read(path, as_version=4), seconds


def stream_text(cell) -> str:
    """Everything a cell printed (stdout, stderr and text results)."""
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            out.append(o.get("text", ""))
        elif "data" in o:
            out.append(o["data"].get("text/plain", ""))
    return "".join(out)


def read(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))
