"""The site check (``tools/site_check.py``) finds what it claims to find.

A tiny two-page site: one page correct, one with each defect the check must
report (TeX error, undefined macro, missing and undecodable images, a missing
script, a JavaScript error, a link to a page that was not built, a link to a
missing anchor). Needs Chromium (installed by the check itself where it can;
skipped otherwise) and MathJax 3 (the CDN or npm).
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from tests.book_files import ROOT  # noqa: E402

sys.path.insert(0, str(ROOT / "tools"))
import site_check  # noqa: E402

MATHJAX = "https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"
HEAD = f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title>
<script>window.MathJax = {{"tex": {{"macros": {{"Keff": "K_n"}}}}}}</script>
<script defer="defer" src="{MATHJAX}"></script></head><body>"""
GOOD = HEAD + """<h1 id="top">Good</h1><p><span class="math notranslate nohighlight">\\(\\Keff = x^2\\)</span></p>
<img src="fig.png"><a href="bad.html">bad</a> <a href="good.html#top">top</a> <a href="#top">here</a>
<a href="https://colab.research.google.com/x">external</a></body></html>"""
BAD = HEAD + """<h1 id="top">Bad</h1>
<p><span class="math notranslate nohighlight">\\(x_1_2\\)</span></p>
<p><span class="math notranslate nohighlight">\\(\\frac{1}{\\)</span></p>
<p><span class="math notranslate nohighlight">\\(\\nosuchmacro + 1\\)</span></p>
<img src="missing.png"><img src="garbage.png"><script src="missing.js"></script>
<script>notAFunction();</script>
<a href="nowhere.html">gone</a> <a href="good.html#nope">no anchor</a></body></html>"""


@pytest.fixture(scope="module")
def browser():
    try:
        return site_check.ensure_chromium()
    except site_check.Unavailable as why:
        pytest.skip(str(why))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    html = tmp_path_factory.mktemp("html")
    (html / "index.html").write_text(GOOD)
    (html / "good.html").write_text(GOOD)
    (html / "bad.html").write_text(BAD)
    (html / "garbage.png").write_bytes(b"not a png")
    fig, ax = plt.subplots(figsize=(1, 1))
    fig.savefig(html / "fig.png")
    plt.close(fig)
    if site_check.mathjax_source(html)[1] == "unavailable":
        pytest.skip("MathJax 3 cannot be loaded here (CDN unreachable, npm unavailable)")
    return html


def test_a_correct_page_passes(site, browser, capsys):
    assert site_check.check(site, site_pages=[("good.html", None)], browser=browser) == 0
    out = capsys.readouterr().out
    assert "ok   good.html  (1 formulas" in out


def test_every_defect_is_reported(site, browser, capsys):
    assert site_check.check(site, site_pages=[("bad.html", None)], browser=browser) == 1
    out = capsys.readouterr().out
    for expected in ["FAIL bad.html", "MathJax error: Double subscripts: use braces to clarify in: x_1_2",
                     "math not typeset by MathJax: \\(\\frac{1}{\\)",
                     "undefined TeX macro (shown in red) in: \\nosuchmacro + 1",
                     "resource not served: /missing.png", "resource not served: /missing.js",
                     "image does not load: garbage.png", "notAFunction is not defined",
                     "broken link 'nowhere.html': nowhere.html was not built",
                     "broken link 'good.html#nope': good.html has no anchor #nope"]:
        assert expected in out, f"{expected!r} not reported:\n{out}"


def test_a_page_that_was_not_built_fails(site, browser, capsys):
    assert site_check.check(site, site_pages=[("chapters/99.html", None)], browser=browser) == 1
    assert "page was not built" in capsys.readouterr().out
