"""``python -m benchmarks`` (or ``make bench``): run every benchmark script in turn, CSVs in ``benchmarks/results``."""

import importlib
import sys
import traceback

SCRIPTS = ["bench_ntk", "bench_gram_blocks", "bench_effective_gram", "bench_loo_trajectory", "bench_scaling",
           "bench_ntk_memory", "bench_loo_vs_retraining", "bench_train_steps", "bench_peer", "bench_cnn_floor"]


def main():
    failed = []
    for name in SCRIPTS:
        print(f"== benchmarks.{name}", flush=True)
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            saved, sys.argv = sys.argv, [name]
            try:
                module.main()
            finally:
                sys.argv = saved
        except Exception:  # keep going: one failing benchmark must not hide the others
            traceback.print_exc()
            failed.append(name)
    if failed:
        print("failed:", ", ".join(failed))
        sys.exit(1)


if __name__ == "__main__":
    main()
