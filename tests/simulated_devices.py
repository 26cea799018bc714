"""Run a test script on simulated CPU devices, in a subprocess (so the other tests keep one device)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_on_devices(script: str, devices: int = 4) -> dict:
    """Run ``script`` (Python source that prints ``"RESULT" + json``) with ``devices`` CPU devices; its result."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.split("RESULT")[-1])
