"""gramlib: the library behind *The Effective Gram Matrix*.

The library has four layers, each a package that imports only the layers below it
(``tests/test_layers.py`` checks it):

=================  ======================================================================  ========
layer              modules (what they compute)                                             chapters
=================  ======================================================================  ========
``mathematics``    ``gap`` (the gap and its Monte Carlo estimators), ``bounds`` (the       1–7
                   NTK-norm and stability bounds, the two-point example), ``twins`` (twin
                   trajectories), ``gap_ode`` (the gap equation), ``kernel_flow`` (the
                   linearized dynamics of one kernel, factorized once), ``leave_one_out``
                   (exact leave-one-out residuals), ``effective_gram`` (``K_n``),
                   ``linearized_gap`` (its gap equation), ``trajectory`` (the twins
                   along a real run), ``trajectory_gram`` (the run's effective Gram
                   matrix ``K_traj``), ``alignment`` (spectra of ``K_n``): functions of
                   arrays, no data sets, training runs or plots
``kernels``        ``ntk`` (empirical and two-time NTK of any ``f(params, x)``, on one or  4, 7
                   several devices), ``tangent_structure`` (the traced structure behind
                   it), ``tangent_factors`` (its evaluation on a batch)
``runs``           ``files`` (shipped and downloaded files), ``mnist1d`` (its             6, 7
                   generator), ``data``, ``models``, ``train`` (gradient descent),
                   ``predict`` (the trajectory prediction of a run), ``baselines``
``experiments``    ``tasks`` (data sets and networks by name), ``ch4`` … ``ch7`` and       4–7
                   ``ch7_findings`` (each chapter's computations, settings and
                   ``reproduce`` commands), ``real_alignment`` (Chapter 6 on trained
                   networks), ``results`` (result files, provenance,
                   resumable jobs), ``measure`` (timing and memory of the benchmarks)
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
    "mathematics": ("gap", "bounds", "twins", "gap_ode", "kernel_flow", "leave_one_out", "effective_gram",
                    "linearized_gap", "trajectory", "trajectory_gram", "alignment"),
    "kernels": ("ntk", "tangent_structure", "tangent_factors"),
    "runs": ("files", "mnist1d", "data", "models", "train", "predict", "baselines"),
    "experiments": ("tasks", "ch4", "ch5", "ch6", "real_alignment", "ch7", "ch7_findings", "results", "measure"),
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
