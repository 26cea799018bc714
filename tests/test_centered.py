"""The network centered at its initialization, f(x; w) − f(x; w_0) (Chapter 7's centered 10-class cell)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gramlib.experiments import ch7, tasks
from gramlib.runs import data, models
from tests.tolerance import assert_close, tolerance


def _split(n=12, n_test=9, d=5, c=3, seed=0):
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    labels = np.asarray(jax.random.randint(k[2], (n + n_test,), 0, c))
    y = np.eye(c)[labels]
    x = np.asarray(jax.random.normal(k[0], (n + n_test, d)))
    return data.Dataset(x[:n], y[:n], x[n:], y[n:], labels[:n], labels[n:])


def _descent(apply, params, x, y, steps, lr):
    """Plain full-batch gradient descent on ½‖apply(w, x) − y‖²/n, by jax.grad."""
    loss = lambda w: 0.5 * jnp.sum((apply(w, x) - y) ** 2) / len(x)  # noqa: E731
    for _ in range(steps):
        params = jax.tree_util.tree_map(lambda w, g: w - lr * g, params, jax.grad(loss)(params))
    return params


def test_centered_outputs_train_the_network_minus_its_initial_outputs():
    ds, key = _split(), jax.random.PRNGKey(3)
    model = models.mlp(5, 16, 2, 3, dtype=jnp.float64)
    shifted = tasks.centered_outputs(model, ds, key)
    w0, steps = model.init(key), 20
    # Independently: the network f(x; w) − f(x; w_0), w_0 held fixed, trained on the original targets.
    centered = lambda w, x: model.apply(w, x) - model.apply(w0, x)  # noqa: E731
    w_c = _descent(centered, w0, jnp.asarray(ds.x_train), jnp.asarray(ds.y_train), steps, 1.0)
    w_s = _descent(model.apply, w0, jnp.asarray(ds.x_train), jnp.asarray(shifted.y_train), steps, 1.0)
    size = steps * len(ds.x_train) * 16 * 5
    for x, y, y_shift in ((ds.x_train, ds.y_train, shifted.y_train), (ds.x_test, ds.y_test, shifted.y_test)):
        r_centered = np.asarray(centered(w_c, x)) - y
        r_shifted = np.asarray(model.apply(w_s, x)) - y_shift
        assert_close(r_shifted, r_centered, size=size, scale=np.max(np.abs(y)))
    # Before training the centered network predicts zero: r_0 = −Y on both sets.
    assert_close(np.asarray(model.apply(w0, ds.x_train)) - shifted.y_train, -ds.y_train,
                 size=16 * 5, scale=1.0)
    np.testing.assert_array_equal(shifted.labels_train, ds.labels_train)


def test_centered_outputs_scalar_targets_and_bad_input():
    ds = _split()
    binary = ds._replace(y_train=ds.y_train[:, 0] * 2 - 1, y_test=ds.y_test[:, 0] * 2 - 1)
    model = models.mlp(5, 8, 2, 1, dtype=jnp.float64)
    shifted = tasks.centered_outputs(model, binary, jax.random.PRNGKey(0))
    assert shifted.y_train.shape == binary.y_train.shape and shifted.y_test.shape == binary.y_test.shape
    with pytest.raises(TypeError, match="Dataset"):
        tasks.centered_outputs(model, (binary.x_train, binary.y_train), jax.random.PRNGKey(0))


def test_centered_split_centers_inputs_by_the_held_out_mean():
    ds, key = _split(), jax.random.PRNGKey(1)
    model = models.mlp(5, 8, 2, 3, dtype=jnp.float64)
    out = ch7.centered_split(model, ds, key=key)
    assert_close(out.x_test.mean(axis=0), np.zeros(5), size=len(ds.x_test),
                 scale=np.max(np.abs(ds.x_test)))
    f0 = np.asarray(model.apply(model.init(key), out.x_train))
    assert_close(out.y_train - f0, ds.y_train, size=8 * 5, scale=1.0)


def test_centered_cells_have_their_own_fingerprint_and_leave_the_others_alone():
    setting = dataclasses.replace(ch7.scale_config("default"), seeds=(0,))
    runs = {(run["dataset"], run["labels"]): run["settings"] for run in ch7.table_runs(setting, ("mlp",))}
    plain = dataclasses.replace(setting, centered_cells=())
    plain_runs = {(run["dataset"], run["labels"]): run["settings"] for run in ch7.table_runs(plain, ("mlp",))}
    centered = set(setting.centered_cells)
    assert centered and centered <= set(setting.cells)
    for (name, labels), fp in runs.items():
        assert (fp != plain_runs[name, labels]) == (name in centered)
    # The centered 10-class cell is the plain one's cell, and only the centering tells their rows apart.
    assert setting.cells["mnist-10-centered"] == setting.cells["mnist-10"]
    assert runs["mnist-10-centered", "true"] != runs["mnist-10", "true"]
    assert plain_runs["mnist-10-centered", "true"] == plain_runs["mnist-10", "true"]


def test_constant_losses_of_a_split():
    setting = ch7.scale_config("smoke")
    out = ch7.constant_losses(setting, "mnist-10", 0)
    cell = setting.cells["mnist-10"]
    ds, _ = tasks.dataset(cell.dataset, cell.n_train, setting.n_test, key=ch7.split_keys(0)[0], task=cell.task)
    y = np.asarray(ds.y_test)
    rel = tolerance(np.float64, y.size)  # sums over every entry of the held-out targets
    assert out["zero"] == pytest.approx(0.5, rel=rel)  # one-hot targets: ½‖y‖² = ½
    assert out["best"] == pytest.approx(0.5 * (1 - np.sum(y.mean(axis=0) ** 2)), rel=rel)
    # the mean held-out target is the best constant: any other constant does worse
    rng = np.random.default_rng(0)
    for c in [np.zeros(10), y.mean(axis=0) + 0.01 * rng.standard_normal(10), np.asarray(ds.y_train).mean(axis=0)]:
        assert 0.5 * np.mean(np.sum((y - c) ** 2, axis=1)) >= out["best"]
    assert out["best"] <= out["train_frequencies"] <= out["zero"]
    binary = ch7.constant_losses(setting, "digits", 0)  # ±1 targets: ½(1 − ȳ²)
    assert binary["zero"] == pytest.approx(0.5, rel=rel) and binary["best"] <= binary["zero"]


def test_the_run_is_initialized_where_its_centered_split_was_centered():
    """predict_test_loss draws w_0 with initialization_key(key), the key the table centers a split with."""
    from gramlib.experiments import predicted_loss as predict

    ds, key, seen = _split(), jax.random.PRNGKey(5), []
    base = models.mlp(5, 8, 2, 3, dtype=jnp.float64)
    model = base._replace(init=lambda k: seen.append(k) or base.init(k))
    centered = ch7.centered_split(base, ds, key=predict.initialization_key(key))
    predict.predict_test_loss(model, centered, key=key, steps=2, snapshots=1, brute_force=0, progress=False)
    np.testing.assert_array_equal(seen[0], predict.initialization_key(key))
    # so the run starts from zero outputs: its initial residual is −Y
    f0 = np.asarray(base.apply(base.init(seen[0]), centered.x_train))
    assert_close(f0 - centered.y_train, -ds.y_train, size=8 * 5, scale=1.0)
