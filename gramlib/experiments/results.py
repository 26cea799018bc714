"""Result files of the experiments (Chapters 6–7): CSV tables, their provenance and resumable jobs.

Every table a ``reproduce`` command writes goes through :func:`write_csv`, which never leaves
a half-written file: it writes a temporary file in the same folder and renames it over the
old one. A long job is a :class:`ResultTable`: each row is keyed by its settings (data set,
network, labels, seed and the :func:`fingerprint` of the scale's settings), a row already in
the file with the same key is kept and not computed again, every finished row is merged into
the file at once, and rows of other settings are never dropped. Each row records where it
was computed (:func:`provenance`).
"""

from __future__ import annotations

import csv
import fcntl
import functools
import hashlib
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import jax

from ..devices import float64

#: Columns kept as text by :func:`read_table` (every other column is a number).
TEXT_COLUMNS = frozenset({"dataset", "arch", "labels", "baseline_dynamics", "setting", "settings",
                          "command", "platform", "jax_backend", "device_kind", "commit", "jax_version"})
#: Columns read as integers, and as booleans (``True``/``False``).
INT_COLUMNS = frozenset({"seed", "snapshots", "runs", "splits", "n", "k", "cpu_count", "width", "depth"})
BOOL_COLUMNS = frozenset({"diverged", "retrain"})

_REPOSITORY = Path(__file__).resolve().parents[2]
_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read the process's umask (os.umask can only read it by setting it)


def write_csv(path, rows):
    """Write ``rows`` (a non-empty list of dicts) as a CSV table with a header line, atomically.

    The columns are the keys of the rows in order of first appearance (a row without a
    column leaves it empty). The table goes to a temporary file in the same folder, which
    then replaces ``path`` (``os.replace``): an interrupted write leaves the old file whole.
    Returns ``path``.
    """
    if not rows:
        raise ValueError(f"write_csv needs at least one row for {path}, got none")
    path = Path(path)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes the file private (0600); a table is an ordinary file
        with os.fdopen(fd, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _value(column, text):
    if column in TEXT_COLUMNS:
        return text
    if column in BOOL_COLUMNS and text in ("True", "False"):
        return text == "True"
    if text in ("", "nan"):  # an empty cell, or a missing number written as nan (e.g. a CNN's MLP width)
        return math.nan
    if column in INT_COLUMNS:
        return int(float(text))
    try:
        return float(text)
    except ValueError:
        return text


def read_table(path):
    """The rows of a CSV table written by :func:`write_csv`, as dicts.

    Numbers come back as floats (an empty cell as ``nan``), the columns of
    :data:`INT_COLUMNS` as ints, those of :data:`BOOL_COLUMNS` as booleans, and those of
    :data:`TEXT_COLUMNS` (and any other cell that is not a number) as text.
    """
    with open(path, newline="") as fh:
        return [{k: _value(k, v) for k, v in r.items()} for r in csv.DictReader(fh)]


def fingerprint(settings):
    """A short hash (12 hex digits) of a dict of settings: equal settings, equal fingerprint."""
    if not isinstance(settings, dict):
        raise TypeError(f"settings must be a dict, got {type(settings).__name__}")
    text = json.dumps(settings, sort_keys=True, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def git_commit(path=_REPOSITORY):
    """The commit of the git working tree at ``path``, or ``"unknown"``.

    ``-dirty`` is appended when tracked files outside ``results/`` have uncommitted changes (a
    job's own result files, which it rewrites row by row, do not make the code dirty).
    """
    try:
        run = functools.partial(subprocess.run, cwd=path, capture_output=True, text=True, check=True, timeout=30)
        commit = run(["git", "rev-parse", "HEAD"]).stdout.strip()
        # the result files a job writes are its output, not its code: changes under results/ do not count
        dirty = run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"]).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "") if commit else "unknown"


def provenance(command=None):
    """Where a row was computed: the command line, the machine, the git commit and the JAX version.

    ``command`` defaults to this process's command line (``sys.argv``). Returns a dict with
    ``command``, ``platform``, ``cpu_count``, ``jax_backend``, ``device_kind``, ``commit``
    (:func:`git_commit`) and ``jax_version``.
    """
    if command is not None and not isinstance(command, str):
        raise TypeError(f"command must be a string or None, got {type(command).__name__}")
    return {"command": shlex.join(sys.argv) if command is None else command, "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "jax_backend": jax.default_backend(),
            "device_kind": jax.devices()[0].device_kind, "commit": git_commit(), "jax_version": jax.__version__}


class ResultTable:
    """A CSV table that a job fills row by row, resumably, also from several processes at once.

    ``key_columns`` name the columns that identify a row (with a ``settings`` fingerprint
    among them, rows of other settings have other keys). :meth:`get` returns the stored row of
    a key (``None`` if it was not computed), :meth:`put` adds or replaces a row and rewrites the
    whole table atomically (:func:`write_csv`), keeping every other row in its place. Each
    :meth:`put` holds a lock (``fcntl.flock`` on ``<path>.lock``) and re-reads the file first, so
    that processes filling different rows of one table (e.g. ``reproduce ch7 --archs mlp`` and
    ``--archs cnn`` side by side) keep each other's rows.
    """

    def __init__(self, path, key_columns):
        self.path = Path(path)
        self.key_columns = tuple(key_columns)
        if not self.key_columns:
            raise ValueError("key_columns must name at least one column")
        self.rows = read_table(self.path) if self.path.exists() else []

    def key(self, row):
        missing = [c for c in self.key_columns if c not in row]
        if missing:
            raise ValueError(f"a row of {self.path.name} lacks its key column(s) {missing}")
        return tuple(str(row[c]) for c in self.key_columns)

    def _index(self, key):
        return next((i for i, r in enumerate(self.rows)
                     if all(c in r for c in self.key_columns) and self.key(r) == key), None)

    def get(self, key_row):
        """The stored row with the key of ``key_row`` (a dict holding the key columns), or ``None``."""
        at = self._index(self.key(key_row))
        return None if at is None else self.rows[at]

    def put(self, row):
        """Add ``row`` (or replace the stored row of its key) and write the table at once."""
        key = self.key(row)
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            self.rows = read_table(self.path) if self.path.exists() else []
            at = self._index(key)
            if at is None:
                self.rows.append(row)
            else:
                self.rows[at] = row
            write_csv(self.path, self.rows)
        return row


def keyed_rows(path, keys, key=("name", "settings")):
    """The rows of the table at ``path`` whose ``key`` columns match one of ``keys`` (dicts), in the order of
    ``keys``, as copies; a key not in the file is left out (its job is resumable). A row without its
    provenance (``command``, ``commit``, ``platform`` of :func:`provenance`) raises ``ValueError``."""
    stored = {tuple(r[c] for c in key): r for r in read_table(path)}
    rows = [dict(stored[k]) for k in (tuple(k[c] for c in key) for k in keys) if k in stored]
    for r in rows:
        missing = [c for c in ("command", "commit", "platform") if not isinstance(r.get(c), str) or not r[c]]
        if missing:
            raise ValueError(f"row {r[key[0]]} of {path} lacks its provenance {missing}")
    return rows


def run_job(table, keys, compute, *, extra=None):
    """Fill ``table`` (a :class:`ResultTable`) for every key in ``keys``, computing only the missing rows.

    ``keys`` are dicts of the key columns; ``compute(key)`` returns the rest of a row, which
    is stored as ``{**key, **compute(key), **extra}`` (``extra``: e.g. :func:`provenance`)
    and written at once. A row already stored under its key is kept and ``compute`` is not
    called. Returns the rows of ``keys``, in their order.
    """
    rows = []
    for key in keys:
        row = table.get(key)
        if row is None:
            row = table.put({**key, **compute(key), **(extra or {})})
        rows.append(row)
    return rows


def in_float64(fn):
    """Run ``fn`` with JAX's float64 switched on, and restore the caller's setting afterwards (also on error)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with float64():
            return fn(*args, **kwargs)

    return wrapper
