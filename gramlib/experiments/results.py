"""Result files of the experiments: CSV tables (Chapters 6–7)."""

from __future__ import annotations

import csv


def write_csv(path, rows):
    """Write a list of dicts (same keys) as a CSV table with a header line."""

    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path



def read_table(path):
    """Rows of a CSV written by :func:`reproduce_ch7`, numbers as floats (``seed`` as int)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    text = {"dataset", "arch", "labels", "diverged", "baseline_dynamics"}
    for r in rows:
        for k, v in r.items():
            if k not in text:
                r[k] = int(v) if k in ("seed", "snapshots", "runs") else float(v)
    return rows
