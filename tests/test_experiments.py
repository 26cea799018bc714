"""The experiments layer: result files (atomic, resumable, with provenance), the reproduce commands,
Chapter 7's merge of its committed result folders and its findings, and Chapter 6's pieces."""

import csv
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)

from gramlib import (alignment, ch6, ch7, ch7_findings, data, effective_gram, kernel_flow, models,  # noqa: E402
                     predict, results, tasks)

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
        tasks.architecture("rnn", (8, 8, 1), 1, {"width": 8, "channels": 2}, jnp.float64)
    with pytest.raises(ValueError, match="scale"):
        ch6.scale_config("huge")
    with pytest.raises(ValueError, match="unknown dataset"):
        ch6.chapter_settings(ch6.scale_config("smoke"), key=KEY, datasets=("cifar10",), progress=False)
    ds, shape = tasks.dataset("digits", 1000, 2000, key=KEY)
    assert shape == (8, 8, 1) and len(ds.y_test) == 797  # the digits hold 1797 samples


# --- Chapter 7: reproduce commands ---------------------------------------------------------------------------

def test_summarize_averages_cells():
    rows = [{"dataset": "d", "arch": "mlp", "labels": "true", "seed": s, "predicted": 1.0 + s, "held_out": 2.0,
             "relative_error": 0.1 * s, "one_time": 0.5, "one_time_relative_error": 0.75, "gcv": 1.0,
             "gcv_relative_error": 0.5, "linearized": 1.0, "ntk_bound": 3.0, "contraction_free": 4.0,
             "brute_force": 1.0, "predicted_on_subset": 1.0, "correlation": 0.99 + 0.001 * s} for s in range(3)]
    rows.append(dict(rows[0], labels="random", predicted=7.0, held_out=8.0))
    (cell,) = ch7.summarize(rows)
    assert cell["runs"] == 3 and cell["predicted"] == 2.0 and abs(cell["relative_error"] - 0.1) < 1e-15
    assert cell["min_correlation"] == 0.99 and cell["random_predicted"] == 7.0
    assert cell["one_time"] == 0.5 and cell["one_time_relative_error"] == 0.75


def test_command_line_refuses_unknown_choices_and_records_itself(monkeypatch):
    from gramlib.__main__ import main

    with pytest.raises(SystemExit):
        main(["reproduce", "ch9"])
    with pytest.raises(SystemExit):
        main(["reproduce", "ch7", "--scale", "huge"])
    with pytest.raises(ValueError, match="scale"):
        ch7.reproduce_ch7("/tmp/never-written", "huge")
    seen = {}
    monkeypatch.setattr(ch7, "reproduce_ch7_noise", lambda *a, **kw: seen.update(kw))
    main(["reproduce", "ch7-noise", "--scale", "smoke", "--out", "/tmp/x y"])
    assert seen["command"] == "python -m gramlib reproduce ch7-noise --scale smoke --out '/tmp/x y'"


def test_snapshot_rows_and_noise_floor_are_the_losses_of_their_pieces():
    ds = data.digits(30, 40, key=KEY)
    model = models.mlp(64, 64, 2, dtype=jnp.float64)
    p = predict.predict_test_loss(model, ds, key=jax.random.PRNGKey(1), lr=1.0, steps=20, snapshots=4,
                                  brute_force=0, progress=False)
    rows = ch7.snapshot_rows(p, (1, 4))
    assert [r["snapshots"] for r in rows] == [1, 4]
    assert abs(rows[1]["predicted"] - p.predicted) < 1e-12 and abs(rows[1]["one_time"] - p.one_time) < 1e-12
    one = predict.trajectory_loo(p.run, 1)
    assert abs(rows[0]["one_time"] - 0.5 * np.mean(one**2)) < 1e-12
    assert abs(rows[0]["relative_error"] - abs(rows[0]["predicted"] - p.held_out) / p.held_out) < 1e-12
    setting = {"n_train": 30, "n_test": 40, "task": "parity", "lr": 1.0, "steps": 20}
    f = ch7.noise_floor("digits", setting, splits=2, model=model)
    k_data, k_run = jax.random.split(jax.random.PRNGKey(1001))
    want = predict.frozen_kernel_losses(model, data.digits(30, 40, key=k_data), key=k_run, time=20.0)
    assert np.allclose((f.loo[1], f.held_out[1]), want, rtol=1e-12)
    assert np.allclose(f.relative, np.abs(f.loo - f.held_out) / f.held_out)
    with pytest.raises(ValueError, match="splits"):
        ch7.noise_floor("digits", setting, splits=0)


def test_noise_table_of_the_command_line(tmp_path):
    jax.config.update("jax_enable_x64", False)  # a caller in float32: the command must not change it
    try:
        rows = ch7.reproduce_ch7_noise(tmp_path, "smoke", archs=("mlp",), progress=False)
        assert not jax.config.jax_enable_x64, "reproduce switched float64 on in the caller's process"
    finally:
        jax.config.update("jax_enable_x64", True)
    assert [(r["dataset"], r["arch"]) for r in rows] == [("digits", "mlp"), ("mnist1d", "mlp"), ("teacher", "mlp")]
    back = results.read_table(tmp_path / "ch7_noise.csv")
    for r, b in zip(rows, back):
        assert b["splits"] == 3 and 0 <= b["share_above_10pct"] <= 1
        assert abs(b["mean_relative_error"] - r["mean_relative_error"]) < 1e-12
        assert b["median_relative_error"] <= b["p90_relative_error"]
        assert PROVENANCE <= set(b)


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
    assert table[0] == first[0] and summary[0]["runs"] == 1
    computed.clear()
    ch7.reproduce_ch7(tmp_path, "smoke", **part)  # everything is there: nothing is computed again
    assert computed == [] and results.read_table(tmp_path / "ch7_table.csv") == table
    with pytest.raises(ValueError, match="datasets"):
        ch7.reproduce_ch7(tmp_path, "smoke", datasets=("cifar10",), progress=False)
    with pytest.raises(ValueError, match="seeds"):
        ch7.reproduce_ch7(tmp_path, "smoke", seeds=(7,), progress=False)


def test_table_and_limits_of_the_command_line(tmp_path):
    summary = ch7.reproduce_ch7(tmp_path, "smoke", archs=("mlp",), progress=False)
    table = results.read_table(tmp_path / "ch7_table.csv")
    assert [(r["dataset"], r["labels"]) for r in table] == [
        ("digits", "true"), ("digits", "random"), ("mnist1d", "true"), ("mnist1d", "random"),
        ("teacher", "true"), ("teacher", "random")]
    assert [c["dataset"] for c in summary] == ["digits", "mnist1d", "teacher"]
    for r in table:
        assert abs(r["relative_error"] - abs(r["predicted"] - r["held_out"]) / r["held_out"]) < 1e-12
        assert abs(r["one_time_relative_error"] - abs(r["one_time"] - r["held_out"]) / r["held_out"]) < 1e-12
    snaps = results.read_table(tmp_path / "ch7_snapshots.csv")
    assert sorted({s["snapshots"] for s in snaps}) == [1, 2, 4]
    assert (tmp_path / "ch7_predicted_vs_heldout.png").stat().st_size > 0
    limits = ch7.reproduce_ch7_limits(tmp_path, "smoke", progress=False)
    assert [r["lr"] for r in limits] == [0.5, 1.0, 2.0]
    assert all(r["diverged"] or r["loo_ratio_to_brute_force"] > 0 for r in limits)
    quick = ch7.reproduce_ch7_limits(tmp_path, "smoke", retrain=False, progress=False)
    assert len(results.read_table(tmp_path / "ch7_limits.csv")) == 6  # other settings: both kept
    for r, q in zip(limits, quick):
        assert r["diverged"] == q["diverged"] and r["settings"] != q["settings"]
        if not r["diverged"]:
            assert q["predicted_on_subset"] == r["predicted_on_subset"] and np.isnan(q["brute_force"])
            assert np.isnan(q["loo_ratio_to_brute_force"])
    with pytest.raises(ValueError, match="parity"):
        ch7.reproduce_ch7_limits(tmp_path, "paper")


# --- Chapter 7: the committed result folders -----------------------------------------------------------------

def test_committed_table_merges_the_folders_after_checking_the_runs():
    c = ch7_findings.committed_table(RESULTS)
    gpu = {ch7_findings.run_key(r): r for r in results.read_table(RESULTS / "gpu-one-time" / "ch7_table.csv")}
    assert len(c.rows) == 24 and len(c.checks) == 24 + len(c.cnn_retrained)
    for r in c.rows:
        g = gpu[ch7_findings.run_key(r)]
        assert r["brute_force"] == g["brute_force"] and r["one_time_on_subset"] == g["predicted_on_subset"]
    assert all("relative difference" in line for line in c.checks)
    assert [cell["runs"] for cell in c.summary] == [3] * 6
    rows, checks = ch7_findings.committed_limits(RESULTS)
    assert [r["lr"] for r in rows] == [0.5, 1.0, 2.0] and len(checks) == 3
    assert all(abs(r["bf_held"] - r["bf"] / r["held_out"]) < 1e-15 for r in rows)


@pytest.fixture
def results_copy(tmp_path):
    for folder in ("", "no-retrain", "cnn-retrained", "gpu-one-time"):
        (tmp_path / folder).mkdir(exist_ok=True)
        for name in ("ch7_table.csv", "ch7_limits.csv"):
            if (RESULTS / folder / name).exists():
                shutil.copy(RESULTS / folder / name, tmp_path / folder / name)
    return tmp_path


def _edit(path, change):
    rows = results.read_table(path)
    change(rows)
    results.write_csv(path, rows)


@pytest.mark.parametrize("folder,field", [("", "brute_force"), ("no-retrain", "one_time_on_subset"),
                                          ("cnn-retrained", "brute_force")])
def test_committed_table_refuses_runs_that_differ(results_copy, folder, field):
    _edit(results_copy / folder / "ch7_table.csv", lambda rows: rows[0].update({field: rows[0][field] * (1 + 1e-5)}))
    with pytest.raises(ValueError, match=r"not the same run: .*at most 1e-06 allowed"):
        ch7_findings.committed_table(results_copy)


def test_committed_table_refuses_missing_runs_and_limits_that_differ(results_copy):
    _edit(results_copy / "no-retrain" / "ch7_limits.csv", lambda rows: rows[1].update(one_time_on_subset=1.0))
    with pytest.raises(ValueError, match="not the same run: digits mlp4-relu 1.0"):
        ch7_findings.committed_limits(results_copy)
    _edit(results_copy / "no-retrain" / "ch7_limits.csv", lambda rows: rows[1].update(lr=3.0))
    with pytest.raises(ValueError, match="learning rates"):
        ch7_findings.committed_limits(results_copy)
    _edit(results_copy / "gpu-one-time" / "ch7_table.csv", lambda rows: rows.pop(0))
    with pytest.raises(ValueError, match="is not in gpu-one-time"):
        ch7_findings.committed_table(results_copy)


def test_findings_are_the_comparisons_of_the_merged_table():
    c = ch7_findings.committed_table(RESULTS)
    f = ch7_findings.findings(c, results.read_table(RESULTS / "ch7_noise.csv"))
    mlp = [r for r in c.rows if r["arch"] == "mlp"]
    two = np.array([(r["predicted_on_subset"] - r["brute_force"]) / r["brute_force"] for r in mlp])
    np.testing.assert_allclose(f.twin_errors.errors["mlp", "two-time"], two, rtol=1e-14)
    assert len(f.twin_errors.rows) == len(c.rows) == 24 and f.true_runs == 18
    assert f.mlp_correlation == min(r["correlation"] for r in mlp)
    assert set(f.error) == set(f.floor) == {(d, a) for d in ch7_findings.DATASETS for a in ("mlp", "cnn")}
    assert all(f.error[k] <= f.floor[k] for k in f.at_floor)
    assert all(f.error[k] > f.floor[k] for k in f.error if k not in f.at_floor)
    assert all(f.error[k] < f.gcv_error[k] for k in f.gcv_worse)
    assert f.teacher_cnn["largest"] == (max(f.error, key=f.error.get) == ("teacher", "cnn"))
    assert 0 <= f.one_time_closer_below <= f.one_time_closer <= f.true_runs
    assert [len(f.random_fold[d]) for d in ch7_findings.DATASETS] == [4, 4, 4]
    assert [len(f.true_held[d]) for d in ch7_findings.DATASETS] == [6, 6, 6]


def test_snapshot_convergence_recovers_a_one_over_m_law():
    c, loss = 0.3, 2.0
    snaps = [{"dataset": "d", "arch": arch, "seed": seed, "snapshots": m, "predicted": loss * (1 - c / m),
              "one_time": (1 + seed) * loss * (1 - 2 * c / m)} for arch in ("mlp", "cnn") for seed in (0, 1)
             for m in (1, 2, 5, 10)]
    conv = ch7_findings.snapshot_convergence(snaps)
    assert conv.counts == [1, 2, 5, 10] and conv.monotone
    assert abs(conv.law - (1 / 2 - 1 / 5) / (1 / 5 - 1 / 10)) < 1e-15
    assert np.allclose(conv.measured, conv.law, rtol=1e-12)
    assert np.allclose(conv.left, c / 10 / (1 - c / 10), rtol=1e-12)
    assert np.allclose(conv.rise["mlp", "predicted"], (1 - c / 10) / (1 - c) - 1)
    assert np.allclose(conv.last_rise, (1 - c / 10) / (1 - c / 5) - 1)
    assert not ch7_findings.snapshot_convergence([dict(s, predicted=1 + 1 / s["snapshots"]) for s in snaps]).monotone
    with pytest.raises(ValueError, match="three counts"):
        ch7_findings.snapshot_convergence([s for s in snaps if s["snapshots"] < 5])


# --- Chapter 6 ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_ch6():
    cfg = dict(ch6.scale_config("smoke"), n_train=24, n_test=30, width=16, steps=50, times=3)
    settings = ch6.chapter_settings(cfg, key=KEY, datasets=("digits",), progress=False)
    grams = alignment.effective_grams(settings["MLP / digits"].theta, ch6.flow_times(cfg))
    return cfg, settings, grams


def test_chapter_settings_and_label_runs(small_ch6):
    cfg, settings, grams = small_ch6
    assert list(settings) == ["MLP / digits", "CNN / digits"]
    s = settings["MLP / digits"]
    run = ch6.label_run(s, grams, s.dataset.y_train, s.dataset.y_test, fraction=cfg["fraction"])
    np.testing.assert_array_equal(run.r0, s.f0_train - s.dataset.y_train)
    t = grams.times[-1]
    err = ch6.sampling_error(s, run, t)
    rho = np.asarray(effective_gram.loo_residuals(s.theta, run.r0, t))
    r_test = np.asarray(kernel_flow.kernel_test_residuals(s.theta, s.theta_test, run.r0, s.f0_test - run.y_test, t))
    assert abs(err["loo"] - 0.5 * np.mean(rho**2)) < 1e-14 and abs(err["held"] - 0.5 * np.mean(r_test**2)) < 1e-14
    assert abs(err["held"] - run.test_loss[-1]) < 1e-10 and abs(err["loo"] - run.curve.predicted_test_loss[-1]) < 1e-10
    assert err["within"] in ("yes", "no")


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
    assert abs(got - want) < 1e-4 * abs(want)
    with pytest.raises(ValueError, match="r0"):
        ch6.simulated_twin_gap(theta, r0[:3], t)
    with pytest.raises(ValueError, match="t"):
        ch6.simulated_twin_gap(theta, r0, -1.0)


def test_indefinite_example_has_a_negative_eigenvalue():
    example = ch6.indefinite_example(range(50))
    assert example is not None
    vals = np.linalg.eigvalsh(example.k_matrix)
    assert vals[0] < -1e-6 * np.abs(vals).max()
    np.testing.assert_allclose(example.k_matrix, effective_gram.effective_gram(example.theta, example.t), rtol=1e-12)
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
    assert out.share_r0 == pytest.approx(np.sum((vecs[:, :3].T @ r0) ** 2) / (r0 @ r0), rel=1e-9)  # k = 3 of 30
    assert out.gap == pytest.approx(r0 @ k @ r0, rel=1e-9) and out.random_share == 0.1
    assert out.train_loss == pytest.approx(run.train_loss[-1], rel=1e-12)
    assert 0 < out.test_loss and abs(out.predicted / out.trajectory - 1) < 0.05
    with pytest.raises(ValueError, match="y_train"):
        real_alignment.run_alignment(model, params, ds, ds.y_train[:5], ds.y_test, lr=1.0, steps=6, snapshots=2)
