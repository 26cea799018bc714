"""Run a test script on simulated CPU devices, in a subprocess (so the other tests keep one device)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_on_devices(script: str, devices: int = 4) -> dict:
    """Run ``script`` (Python source that prints ``"RESULT" + json``) with ``devices`` CPU devices; its result.

    The subprocess is a new interpreter: ``script`` switches float64 on itself where it needs it (the
    tests' ``conftest.py`` does not reach it). Other ``XLA_FLAGS`` of the caller (e.g. one CPU thread)
    are passed on.
    """
    keep = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    # The device count first: XLA stops reading at a bare token such as the common one-thread recipe's
    # "intra_op_parallelism_threads=1", and a flag after it would be ignored (the run would see 1 device).
    flags = " ".join([f"--xla_force_host_platform_device_count={devices}"] + keep)
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.split("RESULT")[-1])
