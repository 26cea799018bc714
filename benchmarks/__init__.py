"""Benchmarks of gramlib (appendix "Scaling up"): one script per figure, ``python -m benchmarks`` runs all.

Each script measures with :mod:`gramlib.measure`, the functions the appendix uses
too: the median of several timed calls after a compiling one (the machine load
is recorded next to every row), peak memory in a fresh process, and a CSV under
``benchmarks/results/``. Benchmarks are not tests: nothing fails on speed.
"""
