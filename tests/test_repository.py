"""Checks on the repository itself: notebooks, table of contents, install cell, data."""

import json
import re
import subprocess
import sys

import nbformat
import pytest

from tests.book_files import ROOT, chapter_notebooks, repository_url, toc_files, toc_notebooks

NOTEBOOKS = chapter_notebooks()


def test_there_are_chapter_notebooks():
    assert NOTEBOOKS, "chapters/ holds no notebooks"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs or execution counts; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_listed_in_toc(path):
    listed = {str(ROOT / f) for f in toc_files()}
    assert str(path.with_suffix("")) in listed, f"{path.name} is not listed in _toc.yml"


def test_every_toc_entry_exists():
    missing = [f for f in toc_files()
               if not any((ROOT / f"{f}{ext}").exists() for ext in (".ipynb", ".md"))]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_install_cell_uses_the_configured_repository(path):
    nb = nbformat.read(path, as_version=4)
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    match = re.search(r'REPO\s*=\s*"([^"]+)"', first_code.source)
    assert match, f"{path.name}: the first code cell must install gramlib from REPO = \"...\""
    assert match.group(1) == repository_url(), (
        f"{path.name}: install cell uses {match.group(1)}, _config.yml says {repository_url()}"
    )
    assert "find_spec(\"gramlib\")" in first_code.source, f"{path.name}: install only when gramlib is missing"


def test_make_test_runs_every_toc_notebook():
    out = subprocess.run([sys.executable, "-m", "tests.book_files", "notebooks"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert [str(p.relative_to(ROOT)) for p in toc_notebooks()] == out
    assert len(out) == len(NOTEBOOKS)


def test_shipped_data_matches_manifest():
    from gramlib import files

    entries = json.loads((ROOT / "data" / "MANIFEST.json").read_text())["files"]
    assert entries
    for entry in entries:
        assert {"file", "source", "license", "sha256"} <= entry.keys()
        assert files.sha256(ROOT / "data" / entry["file"]) == entry["sha256"], entry["file"]
