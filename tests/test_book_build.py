"""The website builds with Sphinx warnings as errors (notebooks not executed here:
nbval executes them in the second half of `make test`, and `make book` builds the
executed site with ``--warningiserror``).

Without execution a figure that a code cell draws does not exist, so a ``{numref}``
to it cannot resolve, and a value that a code cell glues is not there for the
``{glue:text}`` roles of the prose; those warnings, and only those, are expected
here: the label must be a figure name that a drawing cell declares in its metadata
(``mystnb.figure.name``), the key one that a code cell glues. Every other warning
fails the test.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.book_files import ROOT, toc_notebooks

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def outputs_of_execution():
    """Figure names declared by drawing cells and keys glued by code cells, over every notebook."""
    names, keys = set(), set()
    for path in toc_notebooks():
        for cell in json.loads(path.read_text())["cells"]:
            name = cell.get("metadata", {}).get("mystnb", {}).get("figure", {}).get("name")
            if name:
                names.add(name)
            if cell["cell_type"] == "code":
                keys |= set(re.findall(r"glue\(\s*[\"']([^\"']+)[\"']", "".join(cell["source"])))
    return names, keys


def test_book_builds_without_warnings(tmp_path):
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    cfg = tmp_path / "_config.yml"
    cfg.write_text(yaml.safe_dump(config))
    out = tmp_path / "build"
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run(
        [str(jb), "build", str(ROOT), "--config", str(cfg), "--path-output", str(out),
         "--nitpick", "--keep-going", "--builder", "html"],
        capture_output=True, text=True,
    )
    log = ANSI.sub("", proc.stdout + proc.stderr)
    assert proc.returncode == 0, log[-6000:]
    assert (out / "_build" / "html" / "index.html").exists()
    figures, glued = outputs_of_execution()
    warnings = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
    expected = [w for w in warnings
                if ((m := re.search(r"undefined label: '([^']+)'", w)) and m.group(1) in figures)
                or ((m := re.search(r"No key '([^']+)' found in glue data", w)) and m.group(1) in glued)]
    unexpected = [w for w in warnings if w not in expected]
    assert not unexpected, "\n".join(unexpected[:40])
