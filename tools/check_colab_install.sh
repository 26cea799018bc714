#!/usr/bin/env bash
# Check that a chapter's install cell works where only Colab's preinstalled
# packages exist: a fresh virtual environment (no system site packages) with
# jax, jaxlib, numpy, matplotlib, ipywidgets and tqdm (+ IPython to run cells)
# at the versions pinned in constraints.txt, and no gramlib.
#
#   tools/check_colab_install.sh                 # the committed HEAD of this repository
#   tools/check_colab_install.sh --working-tree  # the working tree, uncommitted files included
#
# GitHub is not reachable from the machines that build the book, so the
# install cell's REPO (the GitHub URL) is pointed at a local git repository
# holding the same files; everything else in the cell runs unchanged:
# `git clone --depth 1`, `pip install -e`, `sys.path.insert`. Then, in that
# environment: every gramlib module imports, and the first code cells of every
# chapter in _toc.yml (install cell, imports, settings) run under IPython, from
# an empty working directory as in Colab's /content.
# Set FIRST_CELLS to run more or fewer cells (default 3), NOTEBOOKS to a
# space-separated list of notebooks to check other than those of _toc.yml, and
# JAX_FLOOR=1 to install the oldest JAX that pyproject.toml allows (its "jax>=X"
# floor, with jaxlib X) instead of the pinned one: the check that the floor is
# the version the code needs.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
FIRST_CELLS="${FIRST_CELLS:-3}"
WORK="$(mktemp -d /tmp/colab-check.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
mkdir "$WORK/content"  # Colab's working directory is an empty /content
cd "$WORK/content"
quiet() { grep -v -E "^WARNING: Location .* is ignored" || true; }

echo "== 1. the repository as GitHub would serve it: $WORK/origin"
if [[ "${1:-}" == "--working-tree" ]]; then
  mkdir "$WORK/origin"
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard) \
    | (cd "$ROOT" && xargs -0 -I{} sh -c 'test -e "{}" && cp --parents "{}" "$0"' "$WORK/origin")
  git -C "$WORK/origin" init -q -b main
  git -C "$WORK/origin" add -A
  git -C "$WORK/origin" -c user.name=check -c user.email=check@localhost commit -q -m "working tree"
else
  git clone -q "$ROOT" "$WORK/origin"
fi

echo "== 2. a clean environment with only Colab's preinstalled packages (pinned in constraints.txt)"
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --upgrade pip 2>&1 | quiet
CONSTRAINTS="$ROOT/constraints.txt"
JAX_SPEC=(jax jaxlib)
if [[ -n "${JAX_FLOOR:-}" ]]; then
  FLOOR="$(sed -n 's/^ *"jax>=\([0-9.]*\)",$/\1/p' "$ROOT/pyproject.toml")"
  [[ -n "$FLOOR" ]] || { echo "no jax>=X floor in pyproject.toml"; exit 1; }
  echo "   JAX at the floor of pyproject.toml: $FLOOR"
  grep -v -E '^(jax|jaxlib|ml_dtypes|opt_einsum|scipy)==' "$ROOT/constraints.txt" > "$WORK/constraints.txt"
  CONSTRAINTS="$WORK/constraints.txt"
  JAX_SPEC=("jax==$FLOOR" "jaxlib==$FLOOR")
fi
"$WORK/venv/bin/python" -m pip install -q -c "$CONSTRAINTS" "${JAX_SPEC[@]}" numpy matplotlib ipywidgets tqdm ipython 2>&1 | quiet
"$WORK/venv/bin/python" -c 'import jax; print("   JAX", jax.__version__)'
"$WORK/venv/bin/python" -c 'import importlib.util as u; assert u.find_spec("gramlib") is None, "gramlib already installed"'
"$WORK/venv/bin/python" -m pip list --format=freeze > "$WORK/before.txt"

echo "== 3. the chapters' first cells, the install cell pointed at the local repository"
"$PY" - "$ROOT" "$WORK" "$FIRST_CELLS" <<'EOF'
import json, re, sys
from pathlib import Path
root, work, first = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
sys.path.insert(0, str(root))
from tests.book_files import repository_url, toc_notebooks
import os
notebooks = [root / p for p in os.environ.get("NOTEBOOKS", "").split()] or toc_notebooks()
if not notebooks:
    sys.exit("no chapter notebooks in _toc.yml")
url, target = repository_url(), "/tmp/effective-gram-book"
for nb_path in notebooks:
    cells = [c for c in json.loads(nb_path.read_text())["cells"] if c["cell_type"] == "code"]
    sources = ["".join(c["source"]) for c in cells[:first]]
    assert url in sources[0] and target in sources[0], f"{nb_path.name}: unexpected install cell"
    sources[0] = sources[0].replace(url, f"file://{work}/origin").replace(target, f"{work}/clone")
    script = [f"# {nb_path.name}"]
    for i, src in enumerate(sources):
        script += [f"print('-- {nb_path.name}: code cell {i}', flush=True)", src,
                   "import matplotlib.pyplot as _plt; _plt.close('all')"]
    (work / f"{nb_path.stem}.ipy").write_text("\n".join(script) + "\n")
    print(work / f"{nb_path.stem}.ipy")
EOF
for script in "$WORK"/*.ipy; do
  MPLBACKEND=Agg "$WORK/venv/bin/ipython" --no-banner --quick --colors=NoColor "$script" 2>&1 | quiet
done

echo "== 4. gramlib comes from the clone and every module imports without further packages"
"$WORK/venv/bin/python" - "$WORK" <<'EOF'
import importlib, pkgutil, sys
work = sys.argv[1]
import gramlib
assert gramlib.__file__.startswith(f"{work}/clone/"), gramlib.__file__
names = [m.name for m in pkgutil.walk_packages(gramlib.__path__, "gramlib.") if not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
print(f"imported {len(names)} gramlib modules from {gramlib.__file__}")
EOF
"$WORK/venv/bin/python" -m pip list --format=freeze > "$WORK/after.txt"
echo "packages the install cell added:"
{ diff "$WORK/before.txt" "$WORK/after.txt" || true; } | sed -n "s/^> /  /p"
echo "Colab install check passed."
