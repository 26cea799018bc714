"""The book's files as the tests see them: the notebooks in _toc.yml, the repository URL.

``python -m tests.book_files notebooks`` prints the notebooks listed in
``_toc.yml``, one per line, in book order (``make student`` reads them).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def toc_files() -> list[str]:
    """Every ``file:`` entry of ``_toc.yml``, in order, without extension."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    found = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                found.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc.get("parts", toc.get("chapters", [])))
    return found


def toc_notebooks() -> list[Path]:
    """The notebooks of the book, in the order of ``_toc.yml``."""
    return [ROOT / f"{f}.ipynb" for f in toc_files() if (ROOT / f"{f}.ipynb").exists()]


def chapter_notebooks() -> list[Path]:
    """Every notebook stored in ``chapters/``."""
    return sorted((ROOT / "chapters").glob("*.ipynb"))


def repository_url() -> str:
    """The repository URL, set once in ``_config.yml``."""
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]


if __name__ == "__main__":
    if sys.argv[1:] == ["notebooks"]:
        notebooks = toc_notebooks()
        if not notebooks:
            sys.exit("no notebooks listed in _toc.yml")
        print("\n".join(str(p.relative_to(ROOT)) for p in notebooks))
    else:
        sys.exit("usage: python -m tests.book_files notebooks")
