"""gramlib: the library behind *The Effective Gram Matrix*.

One module per idea of the book, grown chapter by chapter:

========================  ==========================================  =======
module                    what it computes                            chapter
========================  ==========================================  =======
``gramlib.gap``           the generalization gap, replace-one and     1
                          leave-one-out estimators, bounds
``gramlib.twins``         twin trajectories, contraction and          2
                          perturbation
``gramlib.gap_ode``       the gap differential equation               3
``gramlib.ntk``           the empirical neural tangent kernel         4
``gramlib.effective_gram``  leave-one-out residuals and ``K_n``       5
``gramlib.alignment``     spectra of ``K_n`` and residual alignment   6
``gramlib.predict``       test-loss prediction for real networks      7
``gramlib.baselines``     GCV, bounds and brute-force baselines       7
``gramlib.data``          shipped and generated datasets
``gramlib.models``        MLPs and CNNs in plain JAX
``gramlib.train``         full-batch gradient descent with recording
``gramlib.plotting``      the book's figure style
========================  ==========================================  =======

Submodules are imported on first use, so ``import gramlib`` is cheap and
``gramlib.gap.monte_carlo_gap`` works without a separate import.
"""

import importlib

__version__ = "0.1.0"


def __getattr__(name):
    if name.startswith("_"):
        raise AttributeError(name)
    try:
        module = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as err:
        if err.name == f"{__name__}.{name}":
            raise AttributeError(f"module 'gramlib' has no attribute {name!r}") from None
        raise
    globals()[name] = module
    return module
