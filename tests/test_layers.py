"""The layers of gramlib, read from its imports (README, "How the library is organized").

Each module of ``gramlib/<layer>/`` may import only the layers below it:

* ``_checks`` and ``devices`` (the base) import no other gramlib module;
* the mathematics and the kernels import only the base and their own layer (the mathematics
  never the kernels, the kernels never the mathematics);
* the runs import the mathematics, the kernels and the base;
* the views import everything but the experiments; the experiments import everything.

Plotting and widgets (matplotlib, ipywidgets, IPython) belong to the views and the experiments.
Every import of a gramlib module sits at the top of its module, and no module imports
another module's private (underscore) name. The rules are checked on the source with ``ast``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "gramlib"
BASE = {"gramlib._checks", "gramlib.devices"}
ALLOWED = {
    "base": set(),
    "mathematics": {"base", "mathematics"},
    "kernels": {"base", "kernels"},
    "runs": {"base", "mathematics", "kernels", "runs"},
    "views": {"base", "mathematics", "kernels", "runs", "views"},
    "experiments": {"base", "mathematics", "kernels", "runs", "views", "experiments"},
    "top": {"base", "mathematics", "kernels", "runs", "views", "experiments", "top"},
}
DRAWING = ("matplotlib", "ipywidgets", "IPython")


def layer_of(module: str) -> str:
    """``base``, a layer name, or ``top`` (``gramlib`` itself and ``gramlib.__main__``)."""
    if module in BASE:
        return "base"
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in ALLOWED:
        return parts[1]
    return "top"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(source: str, module: str, is_package: bool = False):
    """``(imported module, names, at top level, line)`` for every import in ``source``."""
    tree = ast.parse(source)
    top = {id(n) for n in tree.body}
    for parent in ast.walk(tree):
        for node in ast.iter_child_nodes(parent):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield alias.name, [], id(node) in top or isinstance(parent, ast.Try), node.lineno
            elif isinstance(node, ast.ImportFrom):
                target = _absolute(node, module, is_package)
                names = [a.name for a in node.names]
                yield target, names, id(node) in top or isinstance(parent, ast.Try), node.lineno


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """Every breach of the layering rules in the source of ``module``."""
    mine = layer_of(module)
    found = []
    for target, names, at_top, line in imports(source, module, is_package):
        where = f"{module}:{line}"
        if target.split(".")[0] in DRAWING and mine not in ("views", "experiments", "top"):
            found.append(f"{where}: the {mine} layer imports {target} (drawing belongs to the views)")
        if not target.startswith("gramlib"):
            continue
        # "from gramlib.runs import data" imports the module gramlib.runs.data
        targets = [target] if target.count(".") >= 2 or target in BASE else \
            [f"{target}.{n}" if target != "gramlib" or n in ("_checks", "devices") else target for n in names] or [target]
        for t in targets:
            theirs = layer_of(t)
            if theirs not in ALLOWED[mine]:
                found.append(f"{where}: the {mine} layer imports {t} (the {theirs} layer)")
        if not at_top and module != "gramlib.__main__":
            found.append(f"{where}: imports {target} inside a function (imports belong at the top)")
        private = [n for n in names if n.startswith("_") and n not in ("_checks",) and not n.startswith("__")]
        if private and target != module:
            found.append(f"{where}: imports the private name(s) {', '.join(private)} of {target}")
    return found


MODULES = sorted(ROOT.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_respects_the_layers(path):
    name = module_name(path)
    assert not violations(path.read_text(), name, path.name == "__init__.py")


def test_every_module_sits_in_a_layer():
    import gramlib

    for path in MODULES:
        name = module_name(path)
        if name in ("gramlib", "gramlib.__main__") or name in BASE or name.count(".") < 2:
            continue
        layer = layer_of(name)
        assert layer in gramlib.LAYERS, f"{name} is not in a layer package"
        short = name.split(".")[2]
        assert short in gramlib.LAYERS[layer], f"{name} is missing from gramlib.LAYERS[{layer!r}]"


@pytest.mark.parametrize("module,source,expected", [
    # the breaches found on the main of 2026-12-01, in the new layout
    ("gramlib.mathematics.alignment", "def f():\n    from ..runs import data, models\n", "the mathematics layer imports gramlib.runs.data"),
    ("gramlib.mathematics.alignment", "def f():\n    from ..views.plotting import PALETTE\n", "the views layer"),
    ("gramlib.mathematics.alignment", "from matplotlib import colors\n", "drawing belongs to the views"),
    ("gramlib.kernels.sharding", "from ..mathematics.effective_gram import TALBOT_NODES, _loo_limit\n",
     "private name(s) _loo_limit"),
    ("gramlib.kernels.sharding", "from ..mathematics.kernel_flow import spectrum\n", "the kernels layer imports"),
    ("gramlib.runs.predict", "def f():\n    from . import baselines\n", "inside a function"),
    ("gramlib.runs.predict", "from ..experiments import ch7\n", "the experiments layer"),
    ("gramlib.mathematics.gap", "from gramlib.runs import train\n", "the mathematics layer imports gramlib.runs.train"),
])
def test_the_checker_finds_breaches(module, source, expected):
    assert any(expected in v for v in violations(source, module)), violations(source, module)


def test_the_checker_accepts_legal_imports():
    ok = ("from __future__ import annotations\nimport numpy as np\nfrom .. import _checks\n"
          "from ..mathematics import effective_gram\nfrom ..kernels.ntk import empirical_ntk\nfrom . import train\n")
    assert violations(ok, "gramlib.runs.predict") == []
