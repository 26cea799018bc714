"""gramlib: the library behind *The Effective Gram Matrix*.

The library has four layers, each a package that imports only the layers below it
(``tests/test_layers.py`` checks it):

=================  ======================================================================  ========
layer              modules (what they compute)                                             chapters
=================  ======================================================================  ========
``mathematics``    ``gap`` (the gap, its estimators and bounds), ``twins`` (twin           1–6
                   trajectories), ``gap_ode`` (the gap equation), ``kernel_flow`` (the
                   linearized dynamics of one kernel, factorized once), ``effective_gram``
                   (leave-one-out residuals and ``K_n``), ``alignment`` (spectra of
                   ``K_n``): functions of arrays, no data sets, training loops or plots
``kernels``        ``ntk`` (empirical and two-time NTK of any ``f(params, x)``, on one or  4, 7
                   several devices), ``tangent_structure`` (the traced structure behind
                   it)
``runs``           ``data``, ``models``, ``train`` (gradient descent), ``predict`` (the    7
                   trajectory prediction of a run), ``baselines``
``experiments``    ``ch6``, ``ch7`` (each chapter's settings and ``reproduce`` commands),  6, 7
                   ``results`` (result files, their provenance, resumable jobs)
``views``          ``plotting``, ``figures``, ``widgets``, ``tables``, ``student``,        all
                   ``exercises``
=================  ======================================================================  ========

``_checks`` (argument checks) and ``devices`` (device meshes) sit below every layer. Every
module is also reachable by its short name, imported on first use:
``from gramlib import effective_gram`` is ``gramlib.mathematics.effective_gram``, and
``import gramlib`` stays cheap.
"""

import importlib

__version__ = "0.1.0"

LAYERS = {
    "mathematics": ("gap", "twins", "gap_ode", "kernel_flow", "effective_gram", "alignment"),
    "kernels": ("ntk", "tangent_structure"),
    "runs": ("data", "models", "train", "predict", "baselines"),
    "experiments": ("ch6", "ch7", "results"),
    "views": ("plotting", "figures", "widgets", "tables", "student", "exercises"),
}
"""Each layer (a subpackage) and its modules, from the bottom up."""

_HOME = {module: layer for layer, modules in LAYERS.items() for module in modules}


def __getattr__(name):
    if name.startswith("_"):
        raise AttributeError(name)
    path = f"{__name__}.{_HOME[name]}.{name}" if name in _HOME else f"{__name__}.{name}"
    try:
        module = importlib.import_module(path)
    except ModuleNotFoundError as err:
        if err.name == path:
            raise AttributeError(f"module 'gramlib' has no attribute {name!r}") from None
        raise
    globals()[name] = module
    return module
