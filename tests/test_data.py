"""Data sets: shapes, determinism, the MNIST-1D and teacher generators, and the download path
(checksums, caching, offline message) on fixture files the tests write themselves — no network."""

import gzip
import hashlib
import io
import pickle
import tarfile

import jax
import numpy as np
import pytest

from gramlib import data

KEY = jax.random.PRNGKey(0)


def test_digits_still_loads():
    d = data.digits(50, 20, key=KEY)
    assert d.x_train.shape == (50, 64) and d.x_test.shape == (20, 64)
    assert set(np.unique(d.y_train)) <= {-1.0, 1.0}
    assert np.allclose(d.y_train, np.where(d.labels_train % 2 == 0, 1.0, -1.0))


def test_mnist1d_shapes_labels_and_determinism():
    d = data.mnist1d(120, 80, key=KEY)
    assert d.x_train.shape == (120, 40) and d.x_test.shape == (80, 40)
    assert np.allclose(d.y_train, np.where(d.labels_train % 2 == 0, 1.0, -1.0))
    again = data.mnist1d(120, 80, key=KEY)
    assert np.array_equal(d.x_train, again.x_train)
    other = data.mnist1d(120, 80, key=jax.random.PRNGKey(1))
    assert not np.allclose(d.x_train, other.x_train)
    assert abs(d.x_train.mean()) < 1e-10 and abs(np.mean(d.x_train**2) - 1) < 1e-10
    sub = data.mnist1d(60, 40, key=KEY, classes=(3, 7), task=(3, 7))
    assert set(np.unique(sub.labels_train)) <= {3, 7}
    assert np.allclose(sub.y_train, np.where(sub.labels_train == 3, 1.0, -1.0))
    onehot = data.mnist1d(60, 40, key=KEY, task="onehot")
    assert onehot.y_train.shape == (60, 10) and np.all(onehot.y_train.sum(1) == 1)


def test_mnist1d_without_transforms_is_the_template():
    x, labels = data.mnist1d_raw(30, key=KEY, length=12, padding=(0, 0), scale=0.0, max_translation=0,
                                 shear=0.0, corr_noise=0.0, iid_noise=0.0)
    assert np.allclose(x, data.mnist1d_templates()[labels], atol=1e-12)
    t = data.mnist1d_templates()
    assert np.allclose(t[:, 0], 0) and np.allclose(t.std(1), 1)


def test_mnist1d_translation_is_a_circular_shift_of_the_template():
    x, labels = data.mnist1d_raw(40, key=KEY, length=12, padding=(0, 0), scale=0.0, max_translation=5,
                                 shear=0.0, corr_noise=0.0, iid_noise=0.0)
    t = data.mnist1d_templates()
    for xi, c in zip(x, labels):
        assert min(np.max(np.abs(xi - np.roll(t[c], s))) for s in range(-5, 6)) < 1e-12


def test_mnist1d_noise_has_the_requested_scale():
    kw = dict(length=40, padding=(36, 60), scale=0.4, max_translation=48, shear=0.0)
    clean, _ = data.mnist1d_raw(400, key=KEY, corr_noise=0.0, iid_noise=0.0, **kw)
    noisy, _ = data.mnist1d_raw(400, key=KEY, corr_noise=0.0, iid_noise=0.5, **kw)
    assert abs(np.std(noisy - clean) - 0.5) < 0.02
    smooth, _ = data.mnist1d_raw(400, key=KEY, corr_noise=0.25, iid_noise=0.0, **kw)
    noise = smooth - clean
    assert abs(np.std(noise[:, 10:30]) - 0.25) < 0.02          # unit-variance filter away from the edges
    lag1 = np.mean(noise[:, 10:29] * noise[:, 11:30]) / np.mean(noise[:, 10:30] ** 2)
    assert lag1 > 0.8                                          # correlated, not white


def test_mnist1d_classes_are_separable_by_nearest_centroid():
    x, labels = data.mnist1d_raw(500, key=KEY, shear=0.0, max_translation=0, scale=0.0,
                                 corr_noise=0.1, iid_noise=0.02)
    centroid = np.stack([x[labels == c].mean(0) for c in range(10)])
    pred = np.argmin(((x[:, None, :] - centroid[None]) ** 2).sum(-1), axis=1)
    assert np.mean(pred == labels) > 0.3          # chance is 0.1


def test_teacher_labels_follow_the_teacher_and_noise_scrambles_them():
    clean = data.teacher(200, 300, key=KEY, noise=0.0)
    assert clean.x_train.shape == (200, 32) and set(np.unique(clean.y_train)) <= {-1.0, 1.0}
    assert 0.3 < np.mean(clean.y_train > 0) < 0.7
    slight = data.teacher(200, 300, key=KEY, noise=0.3)
    loud = data.teacher(200, 300, key=KEY, noise=100.0)
    assert np.array_equal(clean.x_train, slight.x_train)
    agree = lambda a, b: np.mean(np.concatenate([a.y_train == b.y_train, a.y_test == b.y_test]))  # noqa: E731
    assert agree(clean, slight) > 0.75
    assert abs(agree(clean, loud) - 0.5) < 0.1
    with pytest.raises(ValueError, match="noise"):
        data.teacher(10, 10, key=KEY, noise=-1.0)


def test_random_labels_keep_inputs_and_redraw_targets():
    d = data.digits(200, 300, key=KEY)
    r = data.random_labels(d, key=KEY)
    assert np.array_equal(r.x_train, d.x_train) and np.array_equal(r.x_test, d.x_test)
    assert set(np.unique(r.y_train)) <= {-1.0, 1.0}
    assert abs(np.mean(r.y_train == d.y_train) - 0.5) < 0.12
    oh = data.random_labels(data.digits(100, 50, key=KEY, task="onehot"), key=KEY)
    assert oh.y_train.shape == (100, 10) and np.all(oh.y_train.sum(1) == 1)


# ----------------------------------------------------------------------------- downloads

def idx_bytes(array):
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape)
    return gzip.compress(header + array.tobytes())


def cifar_bytes(rng, sizes):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, count in sizes.items():
            batch = {b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                     b"labels": list(rng.integers(0, 10, count))}
            raw = pickle.dumps(batch)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """Fixture files served through file:// URLs, with a manifest pointing at them."""
    rng = np.random.default_rng(0)
    src = tmp_path / "mirror"
    src.mkdir()
    files = {}
    for split_name, count in (("train", 30), ("t10k", 20)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, count).astype(np.uint8)
        files[f"{split_name}-images-idx3-ubyte.gz"] = idx_bytes(images)
        files[f"{split_name}-labels-idx1-ubyte.gz"] = idx_bytes(labels)
    files["cifar-10-python.tar.gz"] = cifar_bytes(rng, {"data_batch_1": 25, "data_batch_2": 15, "test_batch": 20})
    for name, raw in files.items():
        (src / name).write_bytes(raw)
    entries = {
        "mnist": [{"file": f, "url": (src / f).as_uri(), "md5": hashlib.md5(files[f]).hexdigest()}
                  for f in files if f.endswith("ubyte.gz")],
        "cifar10": [{"file": "cifar-10-python.tar.gz", "url": (src / "cifar-10-python.tar.gz").as_uri(),
                     "md5": hashlib.md5(files["cifar-10-python.tar.gz"]).hexdigest()}],
    }
    monkeypatch.setattr(data, "downloads", lambda name: [dict(e) for e in entries[name]])
    monkeypatch.setenv("GRAMLIB_CACHE", str(tmp_path / "cache"))
    return tmp_path, entries


def test_manifest_lists_official_downloads_with_md5():
    for name in ("mnist", "fashion_mnist", "cifar10"):
        entries = data.downloads(name)
        assert entries and all(len(e["md5"]) == 32 and e["url"].startswith("http") for e in entries)
        assert all({"source", "license"} <= e.keys() for e in entries)
    with pytest.raises(ValueError, match="no downloadable"):
        data.downloads("imagenet")


def test_idx_download_cache_and_checksums(mirror):
    tmp, _ = mirror
    d = data.images("mnist", 30, 15, key=KEY, task="parity")
    assert d.x_train.shape == (30, 784) and d.x_test.shape == (15, 784)
    assert set(np.unique(d.y_train)) <= {-1.0, 1.0}
    cached = tmp / "cache" / "mnist" / "train-images-idx3-ubyte.gz"
    stamp = cached.with_name(cached.name + ".sha256")
    assert stamp.read_text().strip() == hashlib.sha256(cached.read_bytes()).hexdigest()
    x, y = data.images_raw("mnist")
    assert x.shape == (50, 28, 28, 1) and x.dtype == np.uint8 and y.shape == (50,)
    raw = data.read_idx(tmp / "mirror" / "train-images-idx3-ubyte.gz")
    assert np.array_equal(x[:30, ..., 0], raw)
    raw_bytes = cached.read_bytes()
    cached.write_bytes(raw_bytes[:-1] + bytes([raw_bytes[-1] ^ 0xFF]))     # a corrupted cache is refused
    with pytest.raises(ValueError, match="sha256"):
        data.fetch("mnist")


def test_cifar_archive_is_read_in_height_width_channel_order(mirror):
    tmp, _ = mirror
    x, y = data.images_raw("cifar10")
    assert x.shape == (60, 32, 32, 3) and y.shape == (60,)
    with tarfile.open(tmp / "mirror" / "cifar-10-python.tar.gz") as tar:
        first = pickle.load(tar.extractfile("cifar-10-batches-py/data_batch_1"), encoding="bytes")
    assert np.array_equal(x[0, :, :, 1].ravel(), first[b"data"][0, 1024:2048])   # green plane
    d = data.images("cifar10", 40, 20, key=KEY, classes=(0, 1, 2, 3, 4, 5, 6, 7, 8, 9))
    assert d.y_train.shape == (40, 10)


def test_wrong_md5_and_offline_fail_clearly(mirror, monkeypatch):
    _, entries = mirror
    bad = [dict(e, md5="0" * 32) for e in entries["mnist"]]
    monkeypatch.setattr(data, "downloads", lambda name: bad)
    with pytest.raises(ValueError, match="md5"):
        data.fetch("mnist")
    offline = [dict(e, url="file:///nonexistent/gramlib/" + e["file"]) for e in entries["mnist"]]
    monkeypatch.setattr(data, "downloads", lambda name: offline)
    with pytest.raises(RuntimeError, match="offline"):
        data.fetch("mnist")


def test_read_idx_refuses_other_files(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(b"not an idx file"))
    with pytest.raises(ValueError, match="IDX"):
        data.read_idx(path)


def test_split_refuses_mismatched_or_broken_inputs():
    x = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match="one input per label"):
        data.split(x, np.arange(10) % 2, 4, 4, key=jax.random.PRNGKey(0))
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="x contains 1 NaN"):
        data.split(bad, np.arange(20) % 2, 4, 4, key=jax.random.PRNGKey(0))
    with pytest.raises(TypeError, match="labels must hold numbers"):
        data.split(x, np.array(["a"] * 20), 4, 4, key=jax.random.PRNGKey(0))
