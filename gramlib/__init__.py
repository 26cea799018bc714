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
                   ``closed_forms`` (``K_n`` in closed form: exchangeable ``Θ``, the NTK
                   norm), ``linearized_gap`` (its gap equation), ``trajectory`` (the twins
                   along a real run), ``trajectory_gram`` (the run's effective Gram
                   matrix ``K_traj``), ``alignment`` (spectra of ``K_n``): functions of
                   arrays, no data sets, training runs or plots
``kernels``        ``ntk`` (empirical and two-time NTK of any ``f(params, x)``, on one or  4, 7
                   several devices), ``tangent_structure`` (the traced structure behind
                   it), ``tangent_factors`` (its evaluation on a batch)
``runs``           ``files`` (shipped and downloaded files), ``mnist1d`` (its             6, 7
                   generator), ``data``, ``models``, ``train`` (gradient descent),
                   ``predict`` (the trajectory prediction of a run), ``loo_estimate``
                   (one estimate for all n samples), ``predictor`` (a run's
                   leave-one-out questions), ``baselines``
``experiments``    ``tasks`` (data sets and networks by name), ``ch4`` … ``ch7``,         4–7
                   ``ch7_summary``, ``ch7_findings``, ``ch7_estimators``,
                   ``ch7_size_rule`` (each chapter's computations, settings and
                   ``reproduce`` commands), ``predicted_loss`` (Chapter 7's
                   one-call report: prediction, baselines, retraining),
                   ``real_alignment`` (Chapter 6 on trained networks), ``results``
                   (result files, provenance, resumable jobs), ``measure`` (timing
                   and memory of the benchmarks)
``views``          ``plotting``, ``figures``, ``widgets``, ``tables``, ``student``,        all
                   ``exercises``, ``cell_slice`` (the cells a notebook cell needs),
                   ``exercise_cells`` (a chapter's exercises as data), ``grading``
                   (the tests an assignment runs), ``assignments`` (Otter-Grader
                   assignments of the exercises)
=================  ======================================================================  ========

``_checks`` (argument checks) and ``devices`` (device meshes) sit below every layer.

One import path. The curated functions and classes (:data:`API`, listed in ``__all__``) are
top-level names: ``gramlib.empirical_ntk``, ``gramlib.loo_residuals``,
``gramlib.predict_test_loss``, … are the functions of ``gramlib.<layer>.<module>``. Every
module is also reachable by its short name, as an attribute and in an import statement:
``from gramlib import ntk`` and ``from gramlib.ntk import empirical_ntk`` give the module
``gramlib.kernels.ntk`` itself. The one name that is both, ``effective_gram``, stays the
module (``from gramlib import effective_gram; effective_gram.loo_residuals(...)``), and the
module is callable: ``gramlib.effective_gram(theta, t)`` is the function
``gramlib.mathematics.effective_gram.effective_gram``. Everything is imported on first use,
so ``import gramlib`` stays cheap (it imports no JAX).
"""

import importlib
import importlib.abc
import importlib.machinery
import sys

__version__ = "0.1.0"

LAYERS = {
    "mathematics": ("gap", "bounds", "twins", "gap_ode", "kernel_flow", "leave_one_out", "effective_gram",
                    "closed_forms", "linearized_gap", "trajectory", "trajectory_gram", "alignment"),
    "kernels": ("ntk", "tangent_structure", "tangent_factors"),
    "runs": ("files", "mnist1d", "data", "models", "train", "predict", "loo_estimate", "predictor", "baselines"),
    "experiments": ("tasks", "ch4", "ch5", "ch6", "real_alignment", "ch7_settings", "ch7", "ch7_summary",
                    "ch7_findings", "ch7_estimators", "ch7_size_rule", "predicted_loss", "results", "measure"),
    "views": ("plotting", "figures", "widgets", "tables", "student", "exercises", "cell_slice",
              "exercise_cells", "grading", "assignments"),
}
"""Each layer (a subpackage) and its modules, from the bottom up."""

_HOME = {module: layer for layer, modules in LAYERS.items() for module in modules}


API = {
    # mathematics: the linearized dynamics and the leave-one-out machinery (Chapters 4-7)
    "factorize": "kernel_flow", "Factorization": "kernel_flow", "kernel_residuals": "kernel_flow",
    "kernel_test_residuals": "kernel_flow", "residual_loss": "kernel_flow",
    "loo_residuals": "leave_one_out", "loo_rates": "leave_one_out",
    "first_order_loo_residuals": "leave_one_out",
    "effective_gram": "effective_gram", "predicted_gap": "effective_gram",
    "gap_factors": "linearized_gap", "gap_factor_matrices": "linearized_gap",
    "LinearizedGapFactors": "linearized_gap", "perturbation_factor": "linearized_gap",
    "loo_trajectory": "trajectory", "TwinResiduals": "trajectory", "trajectory_effective_gram": "trajectory_gram",
    "spectrum": "alignment", "cumulative_share": "alignment", "bottom_share": "alignment",
    "gap_components": "alignment", "effective_grams": "alignment", "alignment_curve": "alignment",
    "trajectory_alignment": "alignment", "ntk_norm_bound": "bounds",
    # kernels (Chapters 4 and 7)
    "empirical_ntk": "ntk", "two_time_kernel": "ntk",
    # runs (Chapter 7)
    "gradient_descent": "train", "TrainResult": "train", "predict_test_loss": "predicted_loss",
    "Prediction": "predicted_loss", "trajectory_loo": "predict", "estimate_loo_loss": "loo_estimate",
    "LooEstimate": "loo_estimate", "snapshot_check": "loo_estimate", "SnapshotCheck": "loo_estimate",
    "total_stderr": "loo_estimate", "loo_size": "loo_estimate", "LooSize": "loo_estimate",
    "estimate_loo_loss_within": "loo_estimate", "LooEstimateWithin": "loo_estimate",
    "loo_predictor": "predictor", "LooPredictor": "predictor",
    "brute_force_loo": "baselines",
}
"""The curated public API, ``name -> module`` (short name): ``gramlib.<name>`` is ``gramlib.<module>.<name>``."""

__all__ = sorted(API) + ["LAYERS"]


def _module(name):
    """The module of short name ``name`` (``gramlib.<layer>.<name>``), imported on first use."""
    module = importlib.import_module(f"{__name__}.{_HOME[name]}.{name}")
    globals()[name] = module
    return module


def __getattr__(name):
    if name.startswith("_"):
        raise AttributeError(name)
    if name in _HOME:
        return _module(name)
    if name in API:
        value = getattr(_module(API[name]), name)
        globals()[name] = value
        return value
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as err:
        if err.name == f"{__name__}.{name}":
            raise AttributeError(f"module 'gramlib' has no attribute {name!r}") from None
        raise


def __dir__():
    return sorted(set(globals()) | set(API) | set(_HOME) | set(LAYERS))


class _ShortNames(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import gramlib.<short>[.rest]`` imports ``gramlib.<layer>.<short>[.rest]``: one module object, two names.

    ``from gramlib.ntk import empirical_ntk`` and ``import gramlib.exercises.ch05`` then work, and
    give the very modules of ``gramlib.kernels.ntk`` and ``gramlib.views.exercises.ch05``.
    """

    def find_spec(self, fullname, path=None, target=None):
        parts = fullname.split(".")
        if len(parts) < 2 or parts[0] != __name__ or parts[1] not in _HOME:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        return None  # a placeholder; exec_module puts the real module in its place

    def exec_module(self, module):
        parts = module.__name__.split(".")
        real = importlib.import_module(".".join([parts[0], _HOME[parts[1]]] + parts[1:]))
        sys.modules[module.__name__] = real  # the import system returns what sys.modules holds


sys.meta_path[:] = [f for f in sys.meta_path if type(f).__qualname__ != "_ShortNames" or type(f).__module__ != __name__]
sys.meta_path.insert(0, _ShortNames())  # once, also after importlib.reload(gramlib)
