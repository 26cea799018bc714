"""Numbers in chapter prose come from code: no typed-in decimals or percentages outside math,
code and glue roles, except the reviewed allow-list of settings (tests/prose_numbers/<chapter>.txt)."""

import pytest

from tests.book_files import toc_notebooks
from tests.prose_numbers import GLOBAL_ALLOWED, allowed_phrases, notebook_report, typed_numbers

CHAPTERS = toc_notebooks()


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_no_typed_in_results(path):
    hits = notebook_report(path)
    assert not hits, (f"{path.name}: typed-in numbers (cell, number) {hits}; write results with "
                      "{glue:text} or a printed sentence, settings in math, or add a reviewed phrase to "
                      f"tests/prose_numbers/{path.stem}.txt")


def test_a_planted_result_is_caught():
    planted = ("The prediction lands within 3.2% of the held-out loss (0.175 against 0.181), and the "
               "kernel moved by 10⁻³.")
    assert typed_numbers(planted) == ["3.2%", "0.175", "0.181", "10⁻³"]
    glued = ("The prediction lands within {glue:text}`rel:.1%` of the held-out loss, with $\\eta = 0.5$, "
             "`lr=0.5` and a 95% interval.")
    assert typed_numbers(glued) == []
    directive = "```{prf:remark}\n:label: ch00-r1.5\nHere 0.25 is typed.\n```\n```python\nx = 0.5\n```"
    assert typed_numbers(directive) == ["0.25"]


def test_allow_lists_are_short_and_used():
    for path in CHAPTERS:
        phrases = allowed_phrases(path.stem)
        assert len(phrases) <= 12, f"{path.stem}: the allow-list is for a few settings, not results"
        text = "\n".join("".join(c["source"]) for c in __import__("json").loads(path.read_text())["cells"])
        for phrase in phrases:
            assert phrase in text, f"{path.stem}: allow-listed phrase {phrase!r} no longer occurs"
    assert GLOBAL_ALLOWED == ("95%",)
