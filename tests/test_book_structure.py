"""What every chapter page has: a summary, notes and further reading, numbered and captioned
figures, graded exercises with hints, and a bibliography whose every entry is cited."""

import json
import re

import pytest

from tests.book_files import ROOT, toc_notebooks

CHAPTERS = toc_notebooks()
IDS = [p.stem for p in CHAPTERS]
FIGURE_CALLS = re.compile(r"plotting\.figure\(|plt\.subplots\(|plt\.figure\(")


def cells(path):
    return json.loads(path.read_text())["cells"]


def source(cell):
    return "".join(cell["source"])


def prefix(path):
    return "app" if path.stem.startswith("appendix") else f"ch{path.stem[:2]}"


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_chapter_ends_with_summary_and_further_reading(path):
    heads = [line for c in cells(path) if c["cell_type"] == "markdown" for line in source(c).splitlines()
             if line.startswith("## ")]
    assert "## Summary" in heads and "## Notes and further reading" in heads, heads
    assert heads.index("## Summary") < heads.index("## Notes and further reading"), heads
    assert heads[-1] == "## Notes and further reading", f"the chapter must end with it: {heads[-3:]}"


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_every_figure_is_numbered_and_captioned(path):
    names = []
    for i, c in enumerate(cells(path)):
        if c["cell_type"] != "code" or not FIGURE_CALLS.search(source(c)):
            continue
        fig = c["metadata"].get("mystnb", {}).get("figure", {})
        assert fig.get("name", "").startswith(f"{prefix(path)}-fig-"), f"cell {i}: figure name {fig.get('name')!r}"
        assert len(fig.get("caption", "")) >= 40, f"cell {i}: the caption must say what to look at"
        assert source(c).count("plotting.figure(") + source(c).count("plt.subplots(") <= 1, \
            f"cell {i}: one figure per cell (the caption and the name apply to the cell's figure)"
        names.append(fig["name"])
    assert len(names) == len(set(names)), names


@pytest.mark.parametrize("path", CHAPTERS, ids=IDS)
def test_exercises_are_graded_and_coding_exercises_have_hints(path):
    cs = cells(path)
    found = 0
    for i, c in enumerate(cs):
        for m in re.finditer(r"```\{exercise\}([^\n]*)\n", source(c)):
            found += 1
            title = m.group(1)
            assert re.search(r"(^|\s)★{1,3}(\s|$)", title), f"cell {i}: grade the exercise {title!r} with ★ to ★★★"
            following = next((d for d in cs[i + 1:] if d["cell_type"] == "code"), None)
            coding = following is not None and re.search(r"your code here|= None\s*$", source(following), re.M)
            nxt = cs[i + 1] if i + 1 < len(cs) else None
            if coding:
                assert "{admonition} Hint" in source(c) or (nxt and "{admonition} Hint" in source(nxt)), \
                    f"cell {i}: coding exercise {title!r} needs a hint (an admonition titled Hint)"
    assert found >= 3 or path.stem.startswith("appendix"), f"{path.stem}: at least three exercises"


def test_every_bibliography_entry_is_cited_and_every_citation_exists():
    keys = set(re.findall(r"^@\w+\{([^,]+),", (ROOT / "chapters" / "references.bib").read_text(), re.M))
    texts = [source(c) for p in CHAPTERS for c in cells(p) if c["cell_type"] == "markdown"]
    texts += [p.read_text() for p in [ROOT / "intro.md", *(ROOT / "chapters").glob("*.md")]]
    cited = set()
    for t in texts:
        for group in re.findall(r"\{cite(?::[tp])?\}`([^`]+)`", t):
            cited |= {k.strip() for k in group.split(",")}
    assert not cited - keys, f"cited but not in references.bib: {sorted(cited - keys)}"
    assert not keys - cited, f"in references.bib but never cited: {sorted(keys - cited)}"
