"""Self-checks for the exercises of Chapter 3 (the gap equation)."""

from __future__ import annotations

import numpy as np

from . import compare_call, not_answered


def check_gap_integrator(my_integrate) -> bool:
    """Check ``my_integrate(cbar, epsbar, dt) -> [Δ_0, ..., Δ_K]`` (forward Euler, ``Δ_0 = 0``).

    The expected values come from the discrete solution formula
    ``Δ_K = Σ_{k<K} dt ε_k Π_{k<j<K} (1 − dt c_j)``, evaluated term by term.
    """
    if not_answered(my_integrate):
        return False
    rng = np.random.default_rng(7)
    cbar = rng.uniform(-0.2, 1.0, 25)
    epsbar = rng.uniform(0.0, 0.5, 25)
    dt = 0.1
    expected = [sum(dt * epsbar[k] * np.prod(1 - dt * cbar[k + 1:big]) for k in range(big))
                for big in range(len(cbar))]
    return compare_call(my_integrate, "my_integrate", (cbar, epsbar, dt), expected, "integrated gap Δ_k",
                        rtol=1e-9, atol=1e-12,
                        hint="Start from Δ_0 = 0, return K values for K factor values "
                             "(the last factor is not used), and use Δ_{k+1} = (1 − dt c_k) Δ_k + dt ε_k.")
