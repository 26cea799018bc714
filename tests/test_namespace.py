"""One public import path: the curated top-level API, and every module by its short name."""

import importlib
import subprocess
import sys

import pytest

import gramlib

SHORT_NAMES = sorted(gramlib._HOME)


@pytest.mark.parametrize("name", gramlib.__all__)
def test_every_name_in_all_resolves_and_is_listed(name):
    value = getattr(gramlib, name)
    assert value is not None
    assert name in dir(gramlib)
    if name in gramlib.API and name not in gramlib._HOME:
        home = importlib.import_module(f"gramlib.{gramlib._HOME[gramlib.API[name]]}.{gramlib.API[name]}")
        assert value is getattr(home, name)  # the very function of its module, not a copy


def test_star_import_gives_the_curated_api():
    space = {}
    exec("from gramlib import *", space)
    assert {"empirical_ntk", "two_time_kernel", "loo_residuals", "kernel_residuals", "effective_gram",
            "predict_test_loss"} <= set(space)


@pytest.mark.parametrize("short", SHORT_NAMES)
def test_from_short_module_import_works_and_is_one_module(short):
    """``from gramlib.<short> import <name>`` for every module: the layer's module itself, not a second copy."""
    real = importlib.import_module(f"gramlib.{gramlib._HOME[short]}.{short}")
    alias = importlib.import_module(f"gramlib.{short}")
    assert alias is real and getattr(gramlib, short) is real
    public = [n for n in vars(real) if not n.startswith("_")]
    assert public, f"gramlib.{short} has no public name"
    space = {}
    exec(f"from gramlib.{short} import {public[0]}", space)
    assert space[public[0]] is getattr(real, public[0])


def test_nested_short_name_import_is_the_same_module():
    import gramlib.exercises.ch05 as short
    import gramlib.views.exercises.ch05 as real

    assert short is real


def test_effective_gram_is_the_module_and_callable_as_the_function():
    """The one clash: ``gramlib.effective_gram`` stays the module (the chapters import it) and calls the function."""
    import numpy as np

    from gramlib import effective_gram
    from gramlib.mathematics.effective_gram import effective_gram as function

    assert effective_gram is importlib.import_module("gramlib.mathematics.effective_gram")
    assert effective_gram.loo_residuals is gramlib.loo_residuals
    theta = np.array([[2.0, 0.5], [0.5, 1.0]])
    np.testing.assert_array_equal(np.asarray(gramlib.effective_gram(theta, 1.0)), np.asarray(function(theta, 1.0)))


def test_unknown_names_raise_attribute_and_import_errors():
    with pytest.raises(AttributeError, match="no attribute 'not_a_function'"):
        gramlib.not_a_function
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("gramlib.not_a_module")


def test_import_gramlib_is_cheap():
    """``import gramlib`` imports neither JAX nor any layer: everything loads on first use."""
    code = "import sys, gramlib; print(sorted(m for m in sys.modules if m.startswith(('jax', 'gramlib.'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_api_reference_page_documents_the_curated_api():
    """chapters/api_reference.md has an autodoc entry for every name of ``gramlib.API``, at its home module."""
    from pathlib import Path

    page = (Path(__file__).resolve().parent.parent / "chapters" / "api_reference.md").read_text()
    for name, module in gramlib.API.items():
        home = f"gramlib.{gramlib._HOME[module]}.{module}.{name}"
        assert f":: {home}\n" in page, f"chapters/api_reference.md does not document {home}"
    # autodoc writes reStructuredText: in a MyST page its directives must sit in eval-rst blocks, or the
    # docstrings are parsed as Markdown and the page shows raw ".. py:function::" lines
    assert "```{auto" not in page and page.count("```{eval-rst}") >= len(gramlib.API)
