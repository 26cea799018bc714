"""The experiments layer: result files (atomic, resumable, with provenance), the reproduce commands,
Chapter 7's protocol over many splits, its committed table and findings, and Chapter 6's pieces."""

import csv
import dataclasses
import math
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from gramlib import (alignment, ch6, ch7, ch7_findings, ch7_summary, data, effective_gram, kernel_flow, models,
                     predict, predicted_loss, results, tasks)
from gramlib.views import figures, plotting
import matplotlib.pyplot as plt
from tests.tolerance import assert_close, cond, tolerance

KEY = jax.random.PRNGKey(0)
RESULTS = Path(__file__).resolve().parent.parent / "results"
PROVENANCE = {"command", "platform", "cpu_count", "jax_backend", "device_kind", "commit", "jax_version"}


# --- result files -------------------------------------------------------------------------------------------

def test_csv_round_trip_keeps_types_and_fills_missing_cells(tmp_path):
    rows = [{"dataset": "digits", "seed": 3, "predicted": 0.125, "diverged": False},
            {"dataset": "teacher", "seed": 4, "diverged": True, "commit": "1234567"}]
    results.write_csv(tmp_path / "t.csv", rows)
    back = results.read_table(tmp_path / "t.csv")
    assert back[0] == {"dataset": "digits", "seed": 3, "predicted": 0.125, "diverged": False, "commit": ""}
    assert back[1]["seed"] == 4 and np.isnan(back[1]["predicted"]) and back[1]["diverged"] is True
    assert back[1]["commit"] == "1234567"  # a text column stays text even when it looks like a number
    with pytest.raises(ValueError, match="at least one row"):
        results.write_csv(tmp_path / "empty.csv", [])


def test_keyed_rows_follow_the_keys_and_refuse_a_row_without_provenance(tmp_path):
    made = {"command": "test", "commit": "abc", "platform": "linux"}
    results.write_csv(tmp_path / "t.csv", [{"name": "b", "settings": "s1", "x": 2.0, **made},
                                           {"name": "a", "settings": "s1", "x": 1.0, **made},
                                           {"name": "a", "settings": "s0", "x": 0.0, **made}])
    keys = [{"name": "a", "settings": "s1"}, {"name": "c", "settings": "s1"}, {"name": "b", "settings": "s1"}]
    rows = results.keyed_rows(tmp_path / "t.csv", keys)
    assert [(r["name"], r["x"]) for r in rows] == [("a", 1.0), ("b", 2.0)]  # key order; "c" not computed yet
    rows[0]["x"] = 9.0
    assert results.keyed_rows(tmp_path / "t.csv", keys)[0]["x"] == 1.0  # copies, not the stored rows
    results.write_csv(tmp_path / "t.csv", [{"name": "a", "settings": "s1", "x": 1.0, **made, "commit": ""}])
    with pytest.raises(ValueError, match="lacks its provenance"):
        results.keyed_rows(tmp_path / "t.csv", keys)


def test_an_interrupted_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = results.write_csv(tmp_path / "t.csv", [{"a": 1.0}, {"a": 2.0}])
    before = path.read_text()

    def broken(self, rows):
        self.writerow(rows[0])
        raise KeyboardInterrupt

    monkeypatch.setattr(csv.DictWriter, "writerows", broken)
    with pytest.raises(KeyboardInterrupt):
        results.write_csv(path, [{"a": 3.0}, {"a": 4.0}, {"a": 5.0}])
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]  # no temporary file left behind


def test_fingerprint_and_provenance(tmp_path):
    assert results.fingerprint({"n": 3, "lr": 1.0}) == results.fingerprint({"lr": 1.0, "n": 3})
    assert results.fingerprint({"n": 3}) != results.fingerprint({"n": 4})
    with pytest.raises(TypeError, match="dict"):
        results.fingerprint([("n", 3)])
    p = results.provenance("python -m gramlib reproduce ch7")
    assert set(p) == PROVENANCE and p["command"] == "python -m gramlib reproduce ch7"
    assert p["jax_version"] == jax.__version__ and p["jax_backend"] == jax.default_backend()
    assert p["cpu_count"] >= 1 and p["device_kind"]
    assert p["commit"] == "unknown" or len(p["commit"].split("-")[0]) == 40
    assert results.git_commit(tmp_path) == "unknown"  # outside a git working tree
    with pytest.raises(TypeError, match="command"):
        results.provenance(["python"])


def test_a_jobs_own_result_files_do_not_make_the_commit_dirty(tmp_path):
    import subprocess

    git = lambda *args: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],  # noqa: E731
                                       cwd=tmp_path, check=True, capture_output=True, text=True).stdout.strip()
    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "t.csv").write_text("a\n1\n")
    git("add", "-A")
    git("commit", "-qm", "one")
    head = git("rev-parse", "HEAD")
    (tmp_path / "results" / "t.csv").write_text("a\n1\n2\n")  # a job adds a row
    assert results.git_commit(tmp_path) == head
    (tmp_path / "code.py").write_text("x = 2\n")  # the code changes
    assert results.git_commit(tmp_path) == head + "-dirty"


def test_an_interrupted_job_keeps_old_rows_and_resumes(tmp_path):
    path = tmp_path / "table.csv"
    old = [{"dataset": "digits", "seed": 0, "settings": "other", "value": -1.0},
           {"dataset": "digits", "seed": 1, "settings": "other", "value": -2.0}]
    results.write_csv(path, old)
    keys = [{"dataset": "digits", "seed": s, "settings": "mine"} for s in range(3)]
    calls = []

    def fails_after_first(key):
        if calls:
            raise RuntimeError("interrupted")
        calls.append(key["seed"])
        return {"value": 10.0 + key["seed"]}

    with pytest.raises(RuntimeError, match="interrupted"):
        results.run_job(results.ResultTable(path, ("dataset", "seed", "settings")), keys, fails_after_first,
                        extra={"commit": "abc"})
    stored = results.read_table(path)
    assert stored == [{**r, "commit": ""} for r in old] + [{**keys[0], "value": 10.0, "commit": "abc"}]

    computed = []

    def counted(key):
        computed.append(key["seed"])
        return {"value": 10.0 + key["seed"]}

    rows = results.run_job(results.ResultTable(path, ("dataset", "seed", "settings")), keys, counted)
    assert computed == [1, 2]  # only the missing rows
    assert [r["value"] for r in rows] == [10.0, 11.0, 12.0]
    stored = results.read_table(path)
    assert [(r["settings"], r["seed"]) for r in stored] == [("other", 0), ("other", 1), ("mine", 0), ("mine", 1),
                                                            ("mine", 2)]
    with pytest.raises(ValueError, match="key column"):
        results.ResultTable(path, ("dataset", "seed", "settings")).put({"dataset": "digits"})


def test_two_tables_on_one_file_keep_each_others_rows(tmp_path):
    path = tmp_path / "t.csv"
    first, second = (results.ResultTable(path, ("dataset", "settings")) for _ in range(2))  # two processes
    first.put({"dataset": "digits", "settings": "s", "value": 1.0})
    second.put({"dataset": "teacher", "settings": "s", "value": 2.0})  # read before the first put
    first.put({"dataset": "mnist", "settings": "s", "value": 3.0})
    assert [r["dataset"] for r in results.read_table(path)] == ["digits", "teacher", "mnist"]
    assert first.get({"dataset": "teacher", "settings": "s"})["value"] == 2.0
    assert path.stat().st_mode & 0o777 == 0o666 & ~results._UMASK  # an ordinary file, not mkstemp's 0600


def test_in_float64_restores_the_callers_setting():
    seen = []

    @results.in_float64
    def job(fail):
        seen.append(bool(jax.config.jax_enable_x64))
        if fail:
            raise FloatingPointError("boom")
        return 1

    jax.config.update("jax_enable_x64", False)
    try:
        assert job(False) == 1 and not jax.config.jax_enable_x64
        with pytest.raises(FloatingPointError):
            job(True)
        assert not jax.config.jax_enable_x64
    finally:
        jax.config.update("jax_enable_x64", True)
    assert seen == [True, True]


def test_tasks_refuse_unknown_names():
    with pytest.raises(ValueError, match="unknown dataset"):
        tasks.dataset("imagenet", 10, 10, key=KEY)
    with pytest.raises(ValueError, match="architecture"):
        tasks.architecture("rnn", (8, 8, 1), 1, ch6.scale_config("smoke"), jnp.float64)
    with pytest.raises(ValueError, match="scale"):
        ch6.scale_config("huge")
    with pytest.raises(ValueError, match="unknown dataset"):
        ch6.chapter_settings(ch6.scale_config("smoke"), key=KEY, datasets=("cifar10",), progress=False)
    ds, shape = tasks.dataset("digits", 1000, 2000, key=KEY)
    assert shape == (8, 8, 1) and len(ds.y_test) == 797  # the digits hold 1797 samples


# --- Chapter 7: reproduce commands ---------------------------------------------------------------------------

def _protocol_row(seed, **change):
    row = {"dataset": "d", "arch": "mlp", "labels": "true", "seed": seed, "predicted": 1.0 + 0.1 * seed,
           "held_out": 1.0, "one_time": 0.9, "gcv": 1.2, "linearized": 1.1, "exact_loo": 1.0 - 0.05 * seed,
           "linearized_held_out": 1.0, "brute_force": math.nan, "predicted_on_subset": 0.5,
           "one_time_on_subset": 0.4, "correlation": math.nan}
    return {**row, **change}


def test_summarize_is_the_protocol_over_splits():
    rows = [_protocol_row(s) for s in range(4)]
    twins = dict(readout_on_subset=0.55, relinearized_correlation=0.9999, retrain_seconds=100.0)
    rows[0].update(brute_force=0.5 / 1.02, correlation=0.995, relinearized_on_subset=0.5,  # twins retrained
                   relinearized_seconds=10.0, **twins)                                      # on two splits
    rows[1].update(brute_force=0.5 / 0.98, correlation=0.999, relinearized_on_subset=0.5 / 0.98 * 1.01,
                   relinearized_seconds=20.0, **twins)
    rows.append(_protocol_row(0, labels="random", predicted=3.0, held_out=4.0))
    (cell,) = ch7_summary.summarize(rows)
    ROWS = tolerance(np.float64, len(rows))  # means, spreads and ratios over the rows: O(1) numbers
    error = np.array([0.0, 0.1, 0.2, 0.3])  # (predicted − held-out)/held-out per split
    half = scipy.stats.t.ppf(0.975, 3) * error.std(ddof=1) / 2  # Student t, 3 degrees of freedom
    assert cell["splits"] == 4 and abs(cell["error"] - 0.15) <= ROWS and abs(cell["error_half"] - half) <= ROWS
    assert abs(cell["floor"] + 0.075) <= ROWS and abs(cell["abs_floor"] - 0.075) <= ROWS
    assert abs(cell["one_time_error"] + 0.1) <= ROWS and abs(cell["gcv_error"] - 0.2) <= ROWS
    assert cell["retrained"] == 2 and abs(cell["twin_error"]) <= ROWS and abs(cell["twin_abs_error"] - 0.02) <= ROWS
    assert abs(cell["one_time_twin_error"] - (0.4 / 0.5 - 1)) <= ROWS and cell["min_correlation"] == 0.995
    assert abs(cell["readout_twin_error"] - (0.55 / 0.5 - 1)) <= ROWS
    relin = np.array([0.02, 0.01])  # re-linearized against the twins, per retrained split
    assert abs(cell["relinearized_twin_error"] - 0.015) <= ROWS
    assert abs(cell["relinearized_twin_error_half"] - scipy.stats.t.ppf(0.975, 1) * relin.std(ddof=1) / np.sqrt(2)) <= ROWS
    assert cell["min_relinearized_correlation"] == 0.9999 and cell["relinearized_speedup"] == 5.0
    assert cell["random_held_out"] == 4.0 and abs(cell["learned"] - 4.0) <= ROWS
    (alone,) = ch7_summary.summarize([rows[2]])  # one split: no interval, no twins
    assert np.isnan(alone["error_half"]) and alone["retrained"] == 0 and np.isnan(alone["twin_error"])


def test_findings_read_the_intervals_of_each_cell():
    summary = [{"dataset": "a", "arch": "mlp", "error": 0.05, "error_half": 0.1, "floor": 0.2, "floor_half": 0.1,
                "retrained": 2, "twin_error": -0.02, "one_time_twin_error": -0.05, "min_correlation": 0.998,
                "gcv_error": 0.2, "learned": 3.0},
               {"dataset": "b", "arch": "mlp", "error": -0.3, "error_half": 0.1, "floor": -0.25, "floor_half": 0.3,
                "retrained": 0, "twin_error": math.nan, "one_time_twin_error": math.nan, "min_correlation": math.nan,
                "gcv_error": -0.1, "learned": 1.5}]
    f = ch7_findings.findings(summary)
    ROWS = tolerance(np.float64, len(summary))  # differences of the cells' O(1) numbers
    assert f.covers == {("a", "mlp"): True, ("b", "mlp"): False}
    assert f.miss[("a", "mlp")] == 0 and abs(f.miss[("b", "mlp")] - 0.2) <= ROWS
    assert f.floor_covers == {("a", "mlp"): False, ("b", "mlp"): True} and abs(f.floor_miss[("a", "mlp")] - 0.1) <= ROWS
    assert f.twin_within == {("a", "mlp"): True} and f.lowest_correlation == 0.998
    assert f.one_time_further == [("a", "mlp")] and f.gcv_worse == [("a", "mlp")]
    assert f.learned == {("a", "mlp"): 3.0, ("b", "mlp"): 1.5}
    assert ch7_findings.findings([dict(summary[0], learned=math.nan)]).learned == {}  # no random-label run


def test_floor_differences_pair_the_prediction_with_exact_loo_split_by_split():
    rng = np.random.default_rng(0)
    held, lin = rng.uniform(0.5, 1.5, 5), rng.uniform(0.5, 1.5, 5)
    pred, loo = held * rng.uniform(0.8, 1.2, 5), lin * rng.uniform(0.8, 1.2, 5)
    rows = [_protocol_row(s, predicted=pred[s], held_out=held[s], exact_loo=loo[s], linearized_held_out=lin[s])
            for s in range(5)]
    rows += [_protocol_row(0, labels="random", predicted=9.0, held_out=1.0),  # random labels: not counted
             _protocol_row(0, dataset="e", predicted=1.1, exact_loo=0.95)]  # one split: no interval
    paired = ch7_findings.floor_differences(rows)
    assert list(paired) == [("d", "mlp"), ("e", "mlp")]
    error, floor = pred / held - 1, loo / lin - 1
    diff = error - floor  # the same splits, paired
    half = scipy.stats.t.ppf(0.975, 4) * diff.std(ddof=1) / np.sqrt(5)
    ROWS = tolerance(np.float64, len(rows))
    d = paired["d", "mlp"]
    assert d.splits == 5 and abs(d.mean - diff.mean()) <= ROWS and abs(d.half - half) <= ROWS
    assert abs(d.correlation - np.corrcoef(error, floor)[0, 1]) <= ROWS
    e = paired["e", "mlp"]
    assert e.splits == 1 and abs(e.mean - (0.1 + 0.05)) <= ROWS and np.isnan(e.half) and np.isnan(e.correlation)


def test_command_line_refuses_unknown_choices_and_records_itself(monkeypatch):
    from gramlib.__main__ import main

    with pytest.raises(SystemExit):
        main(["reproduce", "ch9"])
    with pytest.raises(SystemExit):
        main(["reproduce", "ch7", "--scale", "huge"])
    with pytest.raises(ValueError, match="scale"):
        ch7.reproduce_ch7("/tmp/never-written", "huge")
    with pytest.raises(SystemExit):
        main(["reproduce", "ch7-noise"])  # folded into the table: the noise floor is measured on its splits
    seen = {}
    monkeypatch.setattr(ch7, "reproduce_ch7_limits", lambda *a, **kw: seen.update(kw, out=a[0]))
    main(["reproduce", "ch7-limits", "--scale", "smoke", "--out", "/tmp/x y"])
    assert seen["command"] == "python -m gramlib reproduce ch7-limits --scale smoke --out '/tmp/x y'"
    main(["reproduce", "ch7-limits", "--scale", "smoke"])
    assert seen["out"] == "results/ch7-limits"


def test_snapshot_rows_and_noise_floor_are_the_losses_of_their_pieces():
    ds = data.digits(30, 40, key=KEY)
    model = models.mlp(64, 64, 2, dtype=jnp.float64)
    p = predicted_loss.predict_test_loss(model, ds, key=jax.random.PRNGKey(1), lr=1.0, steps=20, snapshots=4,
                                  brute_force=0, progress=False)
    rows = ch7.snapshot_rows(p, (1, 4))
    assert [r["snapshots"] for r in rows] == [1, 4]
    rule = tolerance(np.float64, 20 * 30)  # losses of a recursion of 20 steps over 30 samples
    assert rows[1]["predicted"] == pytest.approx(p.predicted, rel=rule) and rows[1]["one_time"] == pytest.approx(p.one_time, rel=rule)
    every = predict.trajectory_loo(p.run, 4, cross=p.predictor.cross).rho  # the row of every snapshot reuses the prediction
    assert rows[1]["predicted"] == pytest.approx(0.5 * np.mean(every**2), rel=rule)
    one = predict.trajectory_loo(p.run, 1).rho
    assert rows[0]["one_time"] == pytest.approx(0.5 * np.mean(one**2), rel=rule)
    two = predict.trajectory_loo(p.run, 1, cross=p.predictor.cross).rho
    assert rows[0]["predicted"] == pytest.approx(0.5 * np.mean(two**2), rel=rule)
    assert abs(rows[0]["relative_error"] - abs(rows[0]["predicted"] - p.held_out) / p.held_out) <= (
        rule * (rows[0]["predicted"] + p.held_out) / p.held_out)  # a difference: its terms' scale
    cell, setting = ch7.Cell("digits", "parity", 30), dataclasses.replace(ch7.scale_config("smoke"), n_test=40, steps=20)
    f = ch7.noise_floor(cell, setting, splits=2, model=model)
    k_data, k_run = jax.random.split(jax.random.PRNGKey(1001))
    want = predict.frozen_kernel_losses(model, data.digits(30, 40, key=k_data), key=k_run, t=20.0)
    np.testing.assert_allclose((f.loo[1], f.held_out[1]), want, rtol=tolerance(np.float64, 30 * 30))  # the same computation
    assert_close(f.relative, np.abs(f.loo - f.held_out) / f.held_out, 3, scale=np.max((f.loo + f.held_out) / f.held_out))
    with pytest.raises(ValueError, match="splits"):
        ch7.noise_floor(cell, setting, splits=0)


def test_center_by_held_out_removes_the_leak_of_the_training_mean():
    """The leak it removes: inputs centered by their own mean make a left-out sample point away from the rest."""
    x_train, x_test = data.standardize(np.random.default_rng(0).normal(size=(12, 50)) + 3.0,
                                       np.random.default_rng(1).normal(size=(20, 50)) + 3.0)
    for i in range(12):
        others = np.delete(x_train, i, axis=0)
        assert np.sum(others @ x_train[i]) == pytest.approx(-x_train[i] @ x_train[i], rel=tolerance(np.float64, 12 * 50 * 12))
    ds = data.digits(20, 30, key=KEY)
    got = data.center_by_held_out(ds)
    scale = np.abs(ds.x_train).max() + np.abs(ds.x_test).max()
    assert_close(got.x_test.mean(axis=0), 0.0, len(ds.x_test), scale=scale)  # the held-out mean is the new center
    assert_close(got.x_train - got.x_test[0], ds.x_train - ds.x_test[0], len(ds.x_test), scale=scale)  # a shift, nothing else
    assert np.array_equal(got.y_train, ds.y_train) and np.array_equal(got.labels_test, ds.labels_test)
    shift = np.linspace(-1, 1, 64)  # any shift of both sets: the same re-centered inputs
    moved = data.center_by_held_out(ds._replace(x_train=ds.x_train + shift, x_test=ds.x_test + shift))
    assert_close(moved.x_train, got.x_train, len(ds.x_test), scale=scale + 1)
    assert_close(moved.x_test, got.x_test, len(ds.x_test), scale=scale + 1)
    with pytest.raises(TypeError, match="Dataset"):
        data.center_by_held_out((ds.x_train, ds.x_test))
    with pytest.raises(ValueError, match="shape"):
        data.center_by_held_out(ds._replace(x_test=ds.x_test[:, :10]))
    with pytest.raises(ValueError, match="finite|NaN"):
        data.center_by_held_out(ds._replace(x_train=np.full_like(ds.x_train, np.nan)))


def test_recentered_run_is_the_split_run_again_on_the_re_centered_inputs():
    ds = data.digits(20, 30, key=KEY)
    model = models.mlp(64, 64, 2, dtype=jnp.float64)
    setting = dataclasses.replace(ch7.scale_config("smoke"), lr=1.0, steps=20, snapshots=4)
    got = ch7.recentered_run(model, ds, setting, key=jax.random.PRNGKey(1))
    centered = data.center_by_held_out(ds)
    want = predict.frozen_kernel_losses(model, centered, key=jax.random.PRNGKey(1), t=20.0)
    np.testing.assert_allclose((got["exact_loo_recentered"], got["linearized_held_out_recentered"]), want,
                               rtol=tolerance(np.float64, 20 * 30))  # the same computation
    p = predicted_loss.predict_test_loss(model, centered, key=jax.random.PRNGKey(1), lr=1.0, steps=20, snapshots=4,
                                  brute_force=0, progress=False)
    assert got["predicted_recentered"] == pytest.approx(p.predicted, rel=tolerance(np.float64, 20 * 20))
    assert got["held_out_recentered"] == pytest.approx(p.held_out, rel=tolerance(np.float64, 20 * 30))
    plain = predict.frozen_kernel_losses(model, ds, key=jax.random.PRNGKey(1), t=20.0)
    assert not np.allclose(plain, want, rtol=1e-3, atol=0)  # the center matters to the network (by > 0.1%)


def test_summarize_centering_pairs_the_two_floors_and_predictions_by_split():
    rows = [{"dataset": "a", "arch": "mlp", "labels": "true", "seed": s, "settings": "x",
             "exact_loo": 1.0 + 0.1 * s, "linearized_held_out": 1.0, "predicted": 3.0 + 0.3 * s,
             "held_out": 2.0} for s in range(3)]
    rows.append({**rows[0], "labels": "random", "exact_loo": 9.0})
    centering = [{"dataset": "a", "seed": s, "settings": "x", "exact_loo_recentered": 2.0 - 0.01 * s,
                  "linearized_held_out_recentered": 2.0, "predicted_recentered": 4.0 + 0.04 * s,
                  "held_out_recentered": 4.0} for s in (0, 1, 2, 5)]  # split 5: not in the table
    (cell,) = ch7_summary.summarize_centering(rows, centering)
    rows_rule = tolerance(np.float64, 3)  # means over 3 splits of O(1) numbers
    assert cell["splits"] == 3 and cell["floor"] == pytest.approx(0.1, abs=rows_rule)
    assert cell["recentered"] == pytest.approx(-0.005, abs=rows_rule)
    assert cell["error"] == pytest.approx(0.65, abs=rows_rule) and cell["recentered_error"] == pytest.approx(0.01, abs=rows_rule)
    t = 4.302652729911275  # Student-t, 2 degrees of freedom, 97.5%; scipy's quantile is accurate to ≈ 1e-13
    assert cell["floor_half"] == pytest.approx(t * 0.1 / np.sqrt(3), rel=1e-9)
    assert cell["error_half"] == pytest.approx(t * 0.15 / np.sqrt(3), rel=1e-9)
    assert cell["recentered_error_half"] == pytest.approx(t * 0.01 / np.sqrt(3), rel=1e-9)


def test_each_row_carries_the_exact_leave_one_out_of_its_own_split(tmp_path):
    jax.config.update("jax_enable_x64", False)  # a caller in float32: the command must not change it
    try:
        ch7.reproduce_ch7(tmp_path, "smoke", archs=("mlp",), datasets=("digits",), seeds=(1,), progress=False)
        assert not jax.config.jax_enable_x64, "reproduce switched float64 on in the caller's process"
    finally:
        jax.config.update("jax_enable_x64", True)
    (row,) = results.read_table(tmp_path / "ch7_table.csv")
    setting = ch7.scale_config("smoke")
    cell = setting.cells["digits"]
    k_data, k_run, _ = jax.random.split(jax.random.PRNGKey(1), 3)  # split 1: its data and initialization
    ds = data.digits(cell.n_train, setting.n_test, key=k_data, task=cell.task)
    model = tasks.architecture("mlp", (8, 8, 1), 1, setting, jnp.float64)
    want = predict.frozen_kernel_losses(model, ds, key=k_run, t=setting.lr * setting.steps)
    # through a CSV file: the table's digits (repr of a float64 round-trips exactly), then the same computation
    np.testing.assert_allclose((row["exact_loo"], row["linearized_held_out"]), want, rtol=tolerance(np.float64, cell.n_train ** 2))
    assert row["retrain"] is False and np.isnan(row["brute_force"]) and PROVENANCE <= set(row)
    assert {s["seed"] for s in results.read_table(tmp_path / "ch7_snapshots.csv")} == {1}  # split 1 < snapshot_splits


def test_table_runs_follow_the_scale():
    setting = ch7.scale_config("default")  # seeds None: every split of the protocol
    runs = ch7.table_runs(setting, ("mlp", "cnn"))
    count = {}
    for run in runs:
        count[run["dataset"], run["arch"], run["labels"]] = count.get((run["dataset"], run["arch"], run["labels"]), 0) + 1
    assert count["mnist-parity", "mlp", "true"] == 10 and count["digits", "cnn", "true"] == 3
    assert ("mnist-10", "cnn", "true") not in count and count["teacher", "mlp", "random"] == 1
    assert sorted((run["dataset"], run["arch"], run["seed"]) for run in runs if run["retrain"]) == sorted(
        [(name, "mlp", seed) for name in ("digits", "teacher", "mnist-parity", "mnist-4v9", "mnist-10",
                                          "mnist-10-centered") for seed in (0, 1)] + [(name, "cnn", 0) for name in ("digits", "teacher")])  # MLP: two splits, CNN: one
    assert not any(run["retrain"] for run in ch7.table_runs(setting, ("mlp",), retrain=False))
    assert ch7.table_runs(dataclasses.replace(setting, seeds=tuple(range(10))), ("mlp", "cnn")) == runs
    only = ch7.table_runs(dataclasses.replace(setting, seeds=(1,)), ("mlp", "cnn"))
    assert only == [run for run in runs if run["seed"] == 1]


def test_scales_are_frozen_and_restricting_one_makes_a_new_one():
    setting = ch7.scale_config("default")
    assert ch7.scale_config("default") is setting and isinstance(setting, ch7.RunSetting)  # one shared instance
    with pytest.raises(dataclasses.FrozenInstanceError):
        setting.lr = 2.0
    with pytest.raises(TypeError):
        setting.cells["digits"] = setting.cells["teacher"]  # the cells are read-only too
    with pytest.raises(ValueError, match="scale must be one of"):
        ch7.scale_config("huge")
    restricted, archs = ch7._restrict(setting, "default", ("mlp",), ("digits",), (1,))
    assert archs == ("mlp",) and list(restricted.cells) == ["digits"] and restricted.seeds == (1,)
    assert setting.seeds is None and len(setting.cells) == 6  # the scale itself is left alone
    assert {run["seed"] for run in ch7.table_runs(restricted, archs)} == {1}
    assert ch7.RUN_SETTINGS == ("n_test", "width", "channels", "lr", "steps", "snapshots", "brute_force")


def test_a_scale_without_a_limit_grid_is_refused_at_once(tmp_path):
    paper = ch7.scale_config("paper")
    assert paper.limits is None
    with pytest.raises(ValueError, match=r"no limit grid; the scales with a limit grid are \['default', 'smoke'\]"):
        ch7.limit_runs(paper)
    with pytest.raises(ValueError, match="scale 'paper' has no limit grid"):
        ch7.reproduce_ch7_limits(tmp_path / "limits", "paper", progress=False)
    assert not (tmp_path / "limits").exists()  # refused before anything was written
    with pytest.raises(ValueError, match="scale 'paper' has no limit grid"):
        ch7_findings.committed_limits(tmp_path, "paper")


def test_part_of_the_table_is_resumed_after_an_interruption(tmp_path, monkeypatch):
    calls = []
    real = ch7.predict_test_loss

    def interrupted(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    part = dict(archs=("mlp",), datasets=("teacher",), seeds=(0,), progress=False)
    monkeypatch.setattr(ch7, "predict_test_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ch7.reproduce_ch7(tmp_path, "smoke", **part)
    first = results.read_table(tmp_path / "ch7_table.csv")
    assert [(r["dataset"], r["labels"], r["seed"]) for r in first] == [("teacher", "true", 0)]
    assert PROVENANCE <= set(first[0]) and len(results.read_table(tmp_path / "ch7_snapshots.csv")) == 3

    computed = []
    monkeypatch.setattr(ch7, "predict_test_loss", lambda *a, **kw: computed.append(1) or real(*a, **kw))
    summary = ch7.reproduce_ch7(tmp_path, "smoke", **part)
    table = results.read_table(tmp_path / "ch7_table.csv")
    assert len(computed) == 1  # only the random-label run was missing
    assert [(r["dataset"], r["arch"], r["labels"], r["seed"]) for r in table] == [
        ("teacher", "mlp", "true", 0), ("teacher", "mlp", "random", 0)]
    assert table[0] == first[0] and summary[0]["splits"] == 1
    computed.clear()
    ch7.reproduce_ch7(tmp_path, "smoke", **part)  # everything is there: nothing is computed again
    text = lambda rows: [{k: repr(v) for k, v in r.items()} for r in rows]  # noqa: E731 (nan == nan as text)
    assert computed == [] and text(results.read_table(tmp_path / "ch7_table.csv")) == text(table)
    other = ch7.reproduce_ch7(tmp_path, "smoke", archs=("mlp",), datasets=("digits",), seeds=(0,), progress=False)
    assert [c["dataset"] for c in other] == ["digits", "teacher"]  # the summary covers the whole table
    with pytest.raises(ValueError, match="datasets"):
        ch7.reproduce_ch7(tmp_path, "smoke", datasets=("cifar10",), progress=False)
    with pytest.raises(ValueError, match="seeds"):
        ch7.reproduce_ch7(tmp_path, "smoke", seeds=(7,), progress=False)


def test_table_and_limits_of_the_command_line(tmp_path):
    summary = ch7.reproduce_ch7(tmp_path, "smoke", archs=("mlp",), progress=False)
    table = results.read_table(tmp_path / "ch7_table.csv")
    assert [(r["dataset"], r["labels"], r["seed"]) for r in table] == [
        (name, labels, seed) for name in ("digits", "teacher", "mnist-10")
        for labels, seed in (("true", 0), ("true", 1), ("true", 2), ("random", 0))]
    assert [c["dataset"] for c in summary] == ["digits", "teacher", "mnist-10"]
    assert [c["splits"] for c in summary] == [3, 3, 3] and [c["retrained"] for c in summary] == [1, 1, 1]
    twinned = [r for r in table if r["retrain"]]  # the runs with twins: also read out and re-linearized
    assert len(twinned) == 3 and all(r["relinearized_on_subset"] > 0 and r["readout_on_subset"] > 0
                                     and r["relinearized_correlation"] > 0.9 and r["relinearized_seconds"] > 0
                                     for r in twinned)
    assert all(np.isnan(r["relinearized_on_subset"]) for r in table if not r["retrain"])
    for r in table:  # a difference over a quotient, recomputed from the table's exact (repr) digits
        scale = (r["predicted"] + r["one_time"] + r["held_out"]) / r["held_out"]
        assert abs(r["relative_error"] - abs(r["predicted"] - r["held_out"]) / r["held_out"]) <= tolerance(np.float64, 3) * scale
        assert abs(r["one_time_relative_error"] - abs(r["one_time"] - r["held_out"]) / r["held_out"]) <= (
            tolerance(np.float64, 3) * scale)
    snaps = results.read_table(tmp_path / "ch7_snapshots.csv")
    assert sorted({s["snapshots"] for s in snaps}) == [1, 2, 4] and {s["seed"] for s in snaps} == {0, 1}
    centering = results.read_table(tmp_path / "ch7_centering.csv")  # the smoke scale re-centers the 10-class cell
    assert [(c["dataset"], c["seed"]) for c in centering] == [("mnist-10", s) for s in (0, 1, 2)]
    assert PROVENANCE <= set(centering[0])
    cell = ch7.SCALES["smoke"].cells["mnist-10"]
    k_data, k_run, _ = jax.random.split(jax.random.PRNGKey(1), 3)
    ds, shape = tasks.dataset(cell.dataset, cell.n_train, 100, key=k_data, task=cell.task)
    model = tasks.architecture("mlp", shape, 10, ch7.SCALES["smoke"], jnp.float64)
    want = ch7.recentered_run(model, ds, ch7.SCALES["smoke"], key=k_run)
    # the same computation again (a CSV keeps every digit): rounding of its losses over steps × samples
    assert all(centering[1][k] == pytest.approx(v, rel=tolerance(np.float64, cell.n_train * ch7.SCALES["smoke"].steps))
               for k, v in want.items())
    assert (tmp_path / "ch7_predicted_vs_heldout.png").stat().st_size > 0
    limits = ch7.reproduce_ch7_limits(tmp_path, "smoke", progress=False)
    assert [(r["width"], r["depth"], r["lr"]) for r in limits] == [(16, 3, 0.5), (16, 3, 2.0), (8, 3, 1.0), (16, 2, 1.0)]
    assert all(r["diverged"] or r["loo_ratio_to_brute_force"] > 0 for r in limits)
    assert all(r["diverged"] or r["readout_on_subset"] > 0 for r in limits)
    assert all(r["diverged"] or (r["relinearized_on_subset"] > 0 and r["relinearized_seconds"] > 0) for r in limits)
    read = ch7_findings.committed_limits(tmp_path, "smoke")  # the grid, complete, with its provenance
    assert [(r["width"], r["lr"]) for r in read] == [(16, 0.5), (16, 2.0), (8, 1.0), (16, 1.0)]
    for r, row in zip(limits, read):
        assert r["diverged"] or row["two_err"] == pytest.approx(r["predicted_on_subset"] / r["brute_force"] - 1,
                                                                abs=tolerance(np.float64, 2) * r["predicted_on_subset"] / r["brute_force"])
    fig, axes = plotting.figure(3)
    figures.plot_limits(axes, read, width=16, depth=3, lr=1.0)
    assert [len(ax.lines) for ax in axes] == [5, 5, 5]  # four estimates and the zero line per sweep
    plt.close(fig)
    quick = ch7.reproduce_ch7_limits(tmp_path, "smoke", retrain=False, progress=False)
    assert len(results.read_table(tmp_path / "ch7_limits.csv")) == 8  # other settings: both kept
    for r, q in zip(limits, quick):
        assert r["diverged"] == q["diverged"] and r["settings"] != q["settings"]
        if not r["diverged"]:
            assert q["predicted_on_subset"] == r["predicted_on_subset"] and np.isnan(q["brute_force"])
            same = tolerance(np.float64, ch7.SCALES["smoke"].steps * r["width"] ** 2)  # the same runs again: steps × parameters
            assert q["readout_on_subset"] == pytest.approx(r["readout_on_subset"], rel=same)
            assert q["relinearized_on_subset"] == pytest.approx(r["relinearized_on_subset"], rel=same)
            assert np.isnan(q["loo_ratio_to_brute_force"])
    with pytest.raises(ValueError, match="not a run of the 'smoke' grid"):
        ch7_findings.committed_limits(tmp_path, "smoke")  # the rows without twins are not the chapter's
    with pytest.raises(ValueError, match="limit grid"):
        ch7.reproduce_ch7_limits(tmp_path, "paper")
    table = ch7_findings.protocol_table(tmp_path, "smoke")
    assert table.missing == {("digits", "cnn"): 3}  # the CNN was not run: two splits and random labels
    assert len(table.rows) == 12 and table.summary == ch7_summary.summarize(table.rows)
    assert {k: len(v) for k, v in table.machines.items()} == {(name, "mlp"): 1 for name in ("digits", "teacher", "mnist-10")}


# --- Chapter 7: the committed result folders -----------------------------------------------------------------

def test_the_committed_table_holds_runs_of_the_protocol_and_says_where_they_were_computed():
    table = ch7_findings.protocol_table(RESULTS / "ch7")  # raises on a row that is not a run of the protocol
    assert all(r["commit"] != "unknown" and not r["commit"].endswith("-dirty") for r in table.rows)
    assert all(c["splits"] >= 10 for c in table.summary if c["arch"] == "mlp")  # the protocol's minimum
    protocol = ch7.table_runs(ch7.scale_config("default"), ("mlp", "cnn"))
    assert sum(table.missing.values()) + len(table.rows) == len(protocol)
    centering = results.read_table(RESULTS / "ch7" / "ch7_centering.csv")  # every true-label MLP split of its cells
    cells = ch7.scale_config("default").recentered_cells
    assert sorted((c["dataset"], c["seed"], c["settings"]) for c in centering) == sorted(
        (run["dataset"], run["seed"], run["settings"]) for run in protocol
        if run["dataset"] in cells and run["arch"] == "mlp" and run["labels"] == "true")
    assert all(PROVENANCE <= set(c) and not c["commit"].endswith("-dirty") for c in centering)
    rows = ch7_findings.committed_limits(RESULTS / "ch7-limits")  # raises on a missing or foreign run
    assert len(rows) == len(ch7.limit_runs(ch7.scale_config("default")))
    assert not any(r["commit"].endswith("-dirty") for r in results.read_table(RESULTS / "ch7-limits" / "ch7_limits.csv"))
    assert all(r["diverged"] or r["bf_held"] == pytest.approx(r["bf"] / r["held_out"], rel=tolerance(np.float64)) for r in rows)
    assert all(r["diverged"] or r["two_err"] == pytest.approx(r["predicted_on_subset"] / r["bf"] - 1,
                                                              rel=tolerance(np.float64)) for r in rows)


def test_a_table_with_a_run_twice_or_without_provenance_is_refused(tmp_path):
    for name in ("ch7_table.csv", "ch7_snapshots.csv"):
        shutil.copy(RESULTS / "ch7" / name, tmp_path / name)
    rows = results.read_table(tmp_path / "ch7_table.csv")
    results.write_csv(tmp_path / "ch7_table.csv", rows + [dict(rows[0], settings="other")])
    with pytest.raises(ValueError, match="appears twice"):
        ch7_findings.protocol_table(tmp_path)
    results.write_csv(tmp_path / "ch7_table.csv", [dict(rows[0], commit="")] + rows[1:])
    with pytest.raises(ValueError, match="provenance"):
        ch7_findings.protocol_table(tmp_path)
    results.write_csv(tmp_path / "ch7_table.csv", [dict(rows[0], settings="0123456789ab")] + rows[1:])
    with pytest.raises(ValueError, match="not a run of the 'default' protocol"):
        ch7_findings.protocol_table(tmp_path)
    twinned = next(i for i, r in enumerate(rows) if not math.isnan(r["brute_force"]))
    results.write_csv(tmp_path / "ch7_table.csv", [dict(r, relinearized_on_subset=math.nan) if i == twinned else r
                                                   for i, r in enumerate(rows)])
    with pytest.raises(ValueError, match="not the re-linearized"):
        ch7_findings.protocol_table(tmp_path)


def test_limits_that_differ_are_refused(tmp_path):
    path = tmp_path / "ch7_limits.csv"
    rows = results.read_table(RESULTS / "ch7-limits" / "ch7_limits.csv")
    results.write_csv(path, [dict(rows[0], settings="0123456789ab")] + rows[1:])
    with pytest.raises(ValueError, match="not a run of the 'default' grid"):
        ch7_findings.committed_limits(tmp_path)
    results.write_csv(path, [dict(rows[0], commit="")] + rows[1:])
    with pytest.raises(ValueError, match="provenance"):
        ch7_findings.committed_limits(tmp_path)
    results.write_csv(path, rows[1:])
    with pytest.raises(ValueError, match="lacks the limits runs"):
        ch7_findings.committed_limits(tmp_path)


def test_snapshot_convergence_recovers_a_one_over_m_law():
    c, loss = 0.3, 2.0
    snaps = [{"dataset": "d", "arch": arch, "seed": seed, "snapshots": m, "predicted": loss * (1 - c / m),
              "one_time": (1 + seed) * loss * (1 - 2 * c / m)} for arch in ("mlp", "cnn") for seed in (0, 1)
             for m in (1, 2, 5, 10)]
    conv = ch7_findings.snapshot_convergence(snaps)
    assert conv.counts == [1, 2, 5, 10] and conv.monotone and conv.one_time_fall == 0
    rule = tolerance(np.float64, 8)  # ratios of differences of a few O(1) numbers
    assert conv.law == pytest.approx((1 / 2 - 1 / 5) / (1 / 5 - 1 / 10), rel=rule)
    np.testing.assert_allclose(conv.measured, conv.law, rtol=rule)
    assert sorted(conv.left) == [("d", arch, seed) for arch in ("cnn", "mlp") for seed in (0, 1)]
    np.testing.assert_allclose(list(conv.left.values()), c / 10 / (1 - c / 10), rtol=rule)
    np.testing.assert_allclose(conv.rise["mlp", "predicted"], (1 - c / 10) / (1 - c) - 1, rtol=rule)
    np.testing.assert_allclose(conv.last_rise, (1 - c / 10) / (1 - c / 5) - 1, rtol=rule)
    dipping = ch7_findings.snapshot_convergence([dict(s, predicted=1 + 1 / s["snapshots"]) for s in snaps])
    assert not dipping.monotone and abs(dipping.two_time_fall - (1 - 1.5 / 2)) <= rule and conv.two_time_fall == 0
    falling = ch7_findings.snapshot_convergence([dict(s, one_time=1 + 1 / s["snapshots"]) for s in snaps])
    assert falling.monotone and abs(falling.one_time_fall - (1 - 1.5 / 2)) <= rule  # from M = 1 to 2: 2 → 1.5
    with pytest.raises(ValueError, match="three counts"):
        ch7_findings.snapshot_convergence([s for s in snaps if s["snapshots"] < 5])


# --- Chapter 6 ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_ch6():
    cfg = dataclasses.replace(ch6.scale_config("smoke"), n_train=24, n_test=30, width=16, steps=50, times=3)
    settings = ch6.chapter_settings(cfg, key=KEY, datasets=("digits",), progress=False)
    grams = alignment.effective_grams(settings["MLP / digits"].theta, ch6.flow_times(cfg))
    return cfg, settings, grams


def test_chapter_settings_and_label_runs(small_ch6):
    cfg, settings, grams = small_ch6
    assert list(settings) == ["MLP / digits", "CNN / digits"]
    s = settings["MLP / digits"]
    run = ch6.label_run(s, grams, s.dataset.y_train, s.dataset.y_test, fraction=cfg.fraction)
    np.testing.assert_array_equal(run.r0, s.f0_train - s.dataset.y_train)
    t = grams.times[-1]
    err = ch6.sampling_error(s, run, t)
    rho = np.asarray(effective_gram.loo_residuals(s.theta, run.r0, t))
    r_test = np.asarray(kernel_flow.kernel_test_residuals(s.theta, s.theta_test, run.r0, s.f0_test - run.y_test, t))
    rule = tolerance(np.float64, len(rho) * len(r_test))  # losses over the samples, through Θ's decomposition
    assert err["loo"] == pytest.approx(0.5 * np.mean(rho**2), rel=rule)
    assert err["held"] == pytest.approx(0.5 * np.mean(r_test**2), rel=rule)
    assert err["held"] == pytest.approx(run.test_loss[-1], rel=rule)
    assert abs(err["loo"] - run.curve.predicted_test_loss[-1]) < 1e-10  # two Talbot inversions: their own error
    assert err["combined"] == pytest.approx(np.hypot(err["se_loo"], err["se_held"]))
    assert err["se_loo"] == pytest.approx(2 * np.std(0.5 * rho**2) / np.sqrt(len(rho)), rel=1e-6)
    assert err["within"] == ("yes" if abs(err["loo"] - err["held"]) <= err["combined"] else "no")


def test_noise_sweep_flips_labels_at_each_level(small_ch6):
    cfg, settings, grams = small_ch6
    s = settings["MLP / digits"]
    sweep = ch6.noise_sweep(s, grams, (0.5, 0.0), key_train=jax.random.PRNGKey(4), key_test=jax.random.PRNGKey(5))
    assert list(sweep.levels) == [0.0, 0.5] and list(sweep.runs) == [0.5, 0.0]
    clean = ch6.label_run(s, grams, s.dataset.y_train, s.dataset.y_test)
    assert sweep.share[0] == clean.curve.share_r0[-1] and sweep.test_loss[0] == clean.test_loss[-1]
    flipped = np.mean(sweep.runs[0.5].y_train != s.dataset.y_train)
    assert flipped == round(0.5 * len(s.dataset.y_train)) / len(s.dataset.y_train)


def test_reproduce_ch6_restores_float32_when_it_fails(monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        assert jax.config.jax_enable_x64
        raise RuntimeError("no settings")

    monkeypatch.setattr(ch6, "chapter_settings", broken)
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(RuntimeError, match="no settings"):
            ch6.reproduce_ch6(tmp_path, "smoke", progress=False)
        assert not jax.config.jax_enable_x64
    finally:
        jax.config.update("jax_enable_x64", True)


def test_simulated_twins_confirm_the_effective_gram_matrix():
    """Chapter 6's direct simulation of every twin against r0ᵀ K_n(t) r0 (Euler steps: agreement to ~1e-4)."""
    theta = ch6.random_gram(3)
    r0 = np.random.default_rng(0).normal(size=4)
    t = 2.0 * 4 / np.linalg.eigvalsh(theta).max()
    want = float(r0 @ np.asarray(effective_gram.effective_gram(theta, t)) @ r0)
    got = ch6.simulated_twin_gap(theta, r0, t, euler_steps=200_000)
    assert abs(got - want) < 1e-4 * abs(want)  # explicit Euler, 200,000 steps: error O(step), not rounding
    with pytest.raises(ValueError, match="r0"):
        ch6.simulated_twin_gap(theta, r0[:3], t)
    with pytest.raises(ValueError, match="t"):
        ch6.simulated_twin_gap(theta, r0, -1.0)


def test_indefinite_example_has_a_negative_eigenvalue():
    example = ch6.indefinite_example(range(50))
    assert example is not None
    vals = np.linalg.eigvalsh(example.k_matrix)
    assert vals[0] < -1e-6 * np.abs(vals).max()  # a margin of 1e8 times the rounding of a 4×4 eigh
    assert_close(example.k_matrix, effective_gram.effective_gram(example.theta, example.t), 16)  # the same computation
    assert ch6.indefinite_example([]) is None


def test_alignment_of_a_trained_network_with_its_runs_effective_gram_matrix():
    from gramlib import real_alignment, trajectory_gram, train

    ds = data.digits(30, 60, key=jax.random.PRNGKey(0))
    model = models.mlp(64, 64, 2, dtype=jnp.float64)
    params = model.init(jax.random.PRNGKey(1))
    out = real_alignment.run_alignment(model, params, ds, ds.y_train, ds.y_test, lr=1.0, steps=60, snapshots=6)
    run = train.gradient_descent(model.apply, params, ds.x_train, ds.y_train, lr=1.0, steps=60, snapshots=6,
                                 progress=False)
    k = trajectory_gram.trajectory_effective_gram(run.thetas, 60, 1.0).k_matrix
    r0 = run.residuals[0]
    vals, vecs = np.linalg.eigh(k)
    # the same run and K_traj again: 60 steps over 30 samples; the bottom eigenvectors turned by 1 / the eigengap
    same = tolerance(np.float64, 60 * 30)
    shares = tolerance(np.float64, 60 * 30, cond=np.abs(vals).max() / (vals[3] - vals[2]))
    assert out.share_r0 == pytest.approx(np.sum((vecs[:, :3].T @ r0) ** 2) / (r0 @ r0), abs=shares)  # k = 3 of 30
    assert out.gap == pytest.approx(r0 @ k @ r0, rel=same) and out.random_share == 0.1
    assert out.train_loss == pytest.approx(run.train_loss[-1], rel=same)
    assert 0 < out.test_loss and abs(out.predicted / out.trajectory - 1) < 0.05
    assert list(out.during.steps) == [10, 20, 30, 40, 50, 60]  # during training: K_traj(t), 8 log-spaced of 6: all
    assert out.during.share_r0[-1] == pytest.approx(out.share_r0, abs=shares)
    assert out.during.share_rt[-1] == pytest.approx(np.sum((vecs[:, :3].T @ run.residuals[-1]) ** 2)
                                                    / np.sum(run.residuals[-1] ** 2), abs=shares)
    with pytest.raises(ValueError, match="y_train"):
        real_alignment.run_alignment(model, params, ds, ds.y_train[:5], ds.y_test, lr=1.0, steps=6, snapshots=2)


def test_chapter_6_runs_table_is_run_alignment_per_seed_and_resumes(tmp_path, monkeypatch):
    from gramlib import real_alignment

    small = dataclasses.replace(real_alignment.SCALES["smoke"], networks=(("digits", (0, 1), "mlp"),), seeds=(3,), steps=20)
    monkeypatch.setitem(real_alignment.SCALES, "smoke", small)
    rows = real_alignment.reproduce_ch6_runs(tmp_path, "smoke", progress=False)
    assert [(r["network"], r["labels"], r["seed"]) for r in rows] == [("MLP / digits 0 vs 1", "true", 3),
                                                                      ("MLP / digits 0 vs 1", "random", 3)]
    k_data, k_init, k_labels = jax.random.split(jax.random.PRNGKey(3), 3)  # seed 3: its split and weights
    ds = data.random_labels(data.digits(30, 60, key=k_data, task=(0, 1)), key=k_labels)
    model = tasks.architecture("mlp", (8, 8, 1), 1, small, jnp.float64)
    want = real_alignment.run_alignment(model, model.init(k_init), ds, ds.y_train, ds.y_test, lr=1.0, steps=20,
                                        snapshots=small.snapshots)
    same = tolerance(np.float64, 20 * 30)  # the same run again (a CSV keeps every digit): 20 steps over 30 samples
    assert rows[1]["share_r0"] == pytest.approx(want.share_r0, rel=same)
    assert rows[1]["test_loss"] == pytest.approx(want.test_loss, rel=same) and PROVENANCE <= set(rows[1])
    monkeypatch.setattr(real_alignment, "run_alignment", lambda *a, **kw: pytest.fail("recomputed a stored run"))
    assert len(real_alignment.reproduce_ch6_runs(tmp_path, "smoke", progress=False)) == 2
    with pytest.raises(ValueError, match="scale"):
        real_alignment.reproduce_ch6_runs(tmp_path, "paper")


def test_runs_summary_pairs_true_and_random_labels_by_seed():
    from gramlib import real_alignment

    def row(labels, seed, share, test, gap=0.1, train=0.0, trajectory=0.1):
        return {"network": "MLP / x", "labels": labels, "seed": seed, "share_r0": share, "random_share": 0.1,
                "test_loss": test, "gap": gap, "train_loss": train, "trajectory": trajectory}

    rows = [row("true", 0, 0.8, 0.1), row("random", 0, 0.3, 0.7), row("true", 1, 0.6, 0.2, gap=0.09, train=0.02),
            row("random", 1, 0.7, 0.6), row("true", 2, 0.9, 0.1)]  # seed 2 has no random-label run
    (s,) = real_alignment.runs_summary(rows)
    assert s["seeds"] == 2 and s["ordered"] == 1  # seed 1: the random labels have the larger share
    rule = tolerance(np.float64, len(rows))  # means and ratios over the rows: O(1) numbers
    assert abs(s["share_true"] - 0.7) <= rule and abs(s["share_random"] - 0.5) <= rule
    assert abs(s["test_true"] - 0.15) <= rule and abs(s["test_random"] - 0.65) <= rule
    assert abs(s["linear_gap"] - 0.1) <= rule  # (0.09 + 0.02) / 0.1 − 1
    three = [{"share_true": 0.8, "test_true": 0.1}, {"share_true": 0.6, "test_true": 0.3},
             {"share_true": 0.7, "test_true": 0.05}]  # the third is more aligned than the second but not the first
    assert real_alignment.concordant_pairs(three) == (2, 3)
