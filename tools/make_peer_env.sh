#!/usr/bin/env bash
# Make the virtual environment of the peer library, neural-tangents, for `make bench-peer`
# (benchmarks/bench_peer.py): neural-tangents 0.6.5 no longer imports on current JAX, so it gets
# its own environment with the JAX it was released for. Usage: tools/make_peer_env.sh [DIR]
# (default .peer-venv, ignored by git). Packages come from the package index pip is configured with.
set -euo pipefail
DIR="${1:-.peer-venv}"
PYTHON="${PYTHON:-python3}"
# neural-tangents' experimental TensorFlow bridge is not used by empirical_ntk_fn: benchmarks/peer_nt.py
# stubs it, so TensorFlow is not installed. The check below imports the library the same way.
CHECK="import sys, types; sys.modules['neural_tangents.experimental'] = types.ModuleType('x'); import jax, neural_tangents as nt; print('jax', jax.__version__, 'neural-tangents', nt.__version__)"
if [ -x "$DIR/bin/python" ] && "$DIR/bin/python" -c "$CHECK" >/dev/null 2>&1; then
    echo "peer environment ready: $DIR"
    exit 0
fi
"$PYTHON" -m venv "$DIR"
"$DIR/bin/python" -m pip install -q --upgrade pip
# tf2jax (and with it TensorFlow) is only needed by neural-tangents' stax-from-TF conversion, not by
# empirical_ntk_fn: neural-tangents is installed without its dependencies, which are listed here.
"$DIR/bin/python" -m pip install -q "jax==0.4.30" "jaxlib==0.4.30" "numpy<2" "scipy<1.14" \
    "frozendict>=2.3" "typing_extensions>=4.0.1" "absl-py"
"$DIR/bin/python" -m pip install -q --no-deps "neural-tangents==0.6.5"
echo "peer environment ready: $DIR ($("$DIR/bin/python" -c "$CHECK"))"
