"""The website builds with Sphinx warnings as errors (notebooks not executed here:
nbval executes them in the second half of `make test`)."""

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.book_files import ROOT


def test_book_builds_without_warnings(tmp_path):
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    cfg = tmp_path / "_config.yml"
    cfg.write_text(yaml.safe_dump(config))
    out = tmp_path / "build"
    jb = Path(sys.executable).with_name("jupyter-book")
    proc = subprocess.run(
        [str(jb), "build", str(ROOT), "--config", str(cfg), "--path-output", str(out),
         "--warningiserror", "--nitpick", "--keep-going", "--builder", "html"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    assert (out / "_build" / "html" / "index.html").exists()
