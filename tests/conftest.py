"""Settings shared by every test module.

float64 is switched on here, once, at import (before any test module imports gramlib and before any
array is made): the theory checks compare formulas to brute force, finite differences and closed forms
at float64 precision (the tolerances in :mod:`tests.tolerance` follow from the dtype's ε), and JAX
makes float32 arrays unless ``jax_enable_x64`` is on. Tests of the float32 path ask for float32 arrays
explicitly (``dtype=jnp.float32``), which this switch does not change. Subprocesses the tests start
(``tests.simulated_devices``) are new interpreters and switch float64 on in their own scripts.
"""

import jax

jax.config.update("jax_enable_x64", True)
