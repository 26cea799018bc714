"""Every chapter and the glossary follow chapters/notation.md: one meaning per symbol."""
import json
import re
from pathlib import Path

import pytest

CHAPTERS = Path(__file__).resolve().parent.parent / "chapters"


def _text(name):
    path = CHAPTERS / name
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        return "\n".join("".join(c["source"]) for c in cells)
    return path.read_text()


# (pattern, why it is wrong) — symbols whose meaning notation.md reserves for something else
FORBIDDEN = [
    (r"Bdiag", "the block diagonal is written \\blockdiag"),
    (r"S_k|S_t\b", "S is a data set; the residual map is \\Phi"),
    (r"R\(z\)|\\hat\\rho_i\(z\)", "z is a sample; the Laplace variable is \\omega"),
    (r"D = \\Diag|D\^\{-2\}", "Diag(diag Θ⁻¹) is written out"),
    (r"\$P\$ parameters|\\times P\b|n \\times P\$|P_k\b", "p counts parameters; the projector onto the bottom-b eigenvectors is \\Pi_b"),
    (r"\$K = |K\(K\+1\)|\$K\$ equally|\$1/K\$", "K_n is the effective Gram matrix; M counts snapshots"),
    (r"(?<!positive )mixture of ridge", "gradient flow is an inverse Laplace transform over complex ridge parameters"),
    (r"M-Lipschitz|\\frac M2", "M counts snapshots; the Lipschitz constant is \\gamma"),
    (r"G\(T\)|D\(T\)", "G is the resolvent and D_i the loss difference; the stability bound uses \\bar g, \\bar\\delta"),
    (r"R_i\(k\)|\\xi_[uw]", "R is the leave-one-out map; the remainder is \\beta_i(k) at \\bar w_k, \\bar u_k"),
    (r"C\(t\) = \\int", "C is the number of outputs; the accumulated contraction is \\chi"),
    (r"\\int_\\Gamma|contour \$\\Gamma", "the Talbot contour is \\mathcal C"),
    (r"\\operatorname\{blockdiag\}", "use the \\blockdiag macro"),
    (r"\\epsbar_", "\\epsbar already carries the subscript n (a double subscript): write \\bar\\varepsilon_{n,k}"),
    (r"predicted generali[sz]ation gap|is the exact gap|gap after training is a quadratic form",
     "r0ᵀK_n r0 is the leave-one-out gap; its expectation is Δ_n plus the learning-curve term (Chapter 5)"),
    (r"\\Delta\^\{\\rm loo\}_n = -\\cbar\\,|\\cbar\(t\) = \\frac\{r_0\^\\top C_n",
     "the per-data-set leave-one-out factors carry a superscript: \\cbar^{\\rm loo}, \\epsbar^{\\rm loo}"),
    (r"\\epsbar = \\frac\{1\}\{n\^2\}\\sum", "the factor at the twins of one data set is \\epsbar^{\\rm loo}"),
    (r"\\epsbar\(t\) = \\frac1\{n\^2\}", "the factor at the twins of one data set is \\epsbar^{\\rm loo}"),
    (r"h_k\b|\\Pi_k\b|bottom-\$k\$|\bk/N\b", "k counts gradient steps; the number of bottom eigenvectors is b (h_b, \\Pi_b, b/N)"),
    (r"k \\sim \\text\{Binomial\}", "k counts gradient steps; a number of copies is n_j"),
    (r"\\lambda_k\b|eigenvalue index \$k\$", "k counts gradient steps; an eigenvalue index is j"),
    (r"e_i\([tk]\)|e_\{i\}\([tk]\)", "e_i is a basis vector and does not move; the twin's offset is e^{(i)}(t)"),
    (r"(?<![\\A-Za-z{])E\[|(?<![\\A-Za-z])E_[Sz]\b", "E is the matrix of all twins' offsets; the expectation is the macro \\E"),
]

BOOK = ["01_the_generalization_gap.ipynb", "02_two_trajectories.ipynb", "03_the_gap_equation.ipynb",
        "04_linearized_networks.ipynb", "05_the_effective_gram_matrix.ipynb", "06_alignment.ipynb",
        "07_predicting_test_loss.ipynb", "appendix_scaling_up.ipynb", "glossary.md"]


@pytest.mark.parametrize("name", BOOK)
def test_no_retired_symbols(name):
    text = _text(name)
    for pattern, why in FORBIDDEN:
        hits = re.findall(pattern, text)
        assert not hits, f"{name}: {hits[:3]} ({why})"


FRONT = ["intro.md", "README.md"]


@pytest.mark.parametrize("name", FRONT)
def test_front_pages_say_which_gap(name):
    text = " ".join((CHAPTERS.parent / name).read_text().split())  # line breaks do not matter
    for pattern, why in FORBIDDEN[-3:-2]:
        hits = re.findall(pattern, text)
        assert not hits, f"{name}: {hits[:3]} ({why})"
    assert "leave-one-out gap" in text and "learning-curve term" in text
    assert not re.search(r"residual of a well-trained network lies mostly", text), \
        f"{name}: Chapter 6's evidence is for the initial residual r0, not for r(t)"


def test_resolvent_is_g_in_docstrings():
    """R is the leave-one-out map in the book; the resolvent is G(ω), in gramlib's docstrings too."""
    library = CHAPTERS.parent / "gramlib"
    for path in library.rglob("*.py"):
        hits = re.findall(r"R\(z\)|\[R\]_ii|R\(ω\)", path.read_text())
        assert not hits, f"{path.relative_to(library.parent)}: {hits[:3]} (the resolvent is G(ω))"


def test_chapter_2_remainder_is_not_rho():
    text = _text("02_two_trajectories.ipynb")
    assert "\\varsigma" in text and "+ \\rho" not in text


def test_relation_to_the_paper_boxes():
    for name in ("03_the_gap_equation.ipynb", "05_the_effective_gram_matrix.ipynb", "06_alignment.ipynb",
                 "07_predicting_test_loss.ipynb"):
        text = _text(name)
        assert "```{admonition} Relation to the paper" in text and "{cite}`yang2025effective`" in text


def test_chapter_6_eigenvalues_of_k_are_mu():
    """λ is an eigenvalue of Θ throughout; Chapter 6's eigenvalues of K_n are μ_j (λ_max(Θ) is Θ's)."""
    text = _text("06_alignment.ipynb")
    assert not re.findall(r"\\lambda_(?!\{\\max\})", text), "Chapter 6: K_n's eigenvalues are \\mu_j"
    assert "\\mu_j" in text and "h_b" in text and "\\Pi_b" in text


def test_two_covariances_are_named():
    """Chapter 3's covariance is over the population; Chapter 4's surrogate over the training set at the run."""
    ch3, ch4 = _text("03_the_gap_equation.ipynb"), _text("04_linearized_networks.ipynb")
    for text in (ch3, ch4):
        assert "population gradient covariance" in text and "in-sample gradient covariance" in text
        assert "\\widehat\\Cov_S" in text
    assert ":label: ch04-prop-loo-perturbation" in ch4 and "{eq}`ch04-loo-perturbation`" in ch4
    assert "per-sample gradient covariance" not in ch3 + ch4


def test_notation_page_lists_the_new_symbols():
    text = _text("notation.md")
    for symbol in ("\\Phi_t", "G(\\omega)", "\\Delta^{\\rm loo}_n", "P_n(t)", "C_n(t)", "\\Ntk(t, s)",
                   "k_T = T/\\eta", "\\Pi_b", "h_b(r)", "\\mu_j", "\\widehat\\Cov_S", "D^{\\rm loo}_i",
                   "\\beta_i(k)", "\\varsigma", "N = nC", "L_{n-1}(t)",
                   "\\cbar^{\\rm loo}", "\\epsbar^{\\rm loo}", "held-out gap", "\\lambda_{\\max}(\\Ntk)"):
        assert symbol in text, symbol
