"""The data files behind the data sets: shipped, verified, downloaded and read.

Shipped data lives in the repository's ``data/`` folder and is listed, with its source,
license and sha256, in ``data/MANIFEST.json``; every load verifies the checksum
(:func:`verified_path`). The full image data sets of the paper-scale settings are
downloaded once into ``data/cache/`` and verified every time (:func:`fetch`), then read by
:func:`read_idx` (MNIST, Fashion-MNIST) or :func:`read_cifar` (CIFAR-10).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np



def data_dir() -> Path:
    """The folder with shipped data and the download cache.

    ``$GRAMLIB_DATA`` if set, else the repository's ``data/`` folder.
    """
    env = os.environ.get("GRAMLIB_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "data"


def manifest() -> dict:
    """The entries of ``data/MANIFEST.json`` (file name -> source, license, sha256)."""
    with open(data_dir() / "MANIFEST.json") as fh:
        return {entry["file"]: entry for entry in json.load(fh)["files"]}


def sha256(path) -> str:
    """The sha256 hex digest of a file."""
    return digest(path, "sha256")


def verified_path(name: str) -> Path:
    """Path of a shipped file after checking its sha256 against the manifest."""
    entries = manifest()
    if name not in entries:
        raise ValueError(f"{name!r} is not a shipped file; data/MANIFEST.json lists {sorted(entries)}")
    path = data_dir() / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; it ships with the repository (see data/MANIFEST.json)")
    expected = entries[name]["sha256"]
    if sha256(path) != expected:
        raise ValueError(f"{path} does not match its sha256 in data/MANIFEST.json (expected {expected})")
    return path


def downloads(dataset):
    """The files of a downloadable data set, from ``data/MANIFEST.json``'s ``downloads`` list.

    Each entry holds ``file``, ``url`` and the official ``md5`` published with
    the data (the checksums torchvision also verifies).
    """
    with open(data_dir() / "MANIFEST.json") as fh:
        entries = [e for e in json.load(fh).get("downloads", []) if e["dataset"] == dataset]
    if not entries:
        raise ValueError(f"no downloadable data set named {dataset!r} in data/MANIFEST.json")
    return entries


def cache_dir() -> Path:
    """Where downloads are kept: ``$GRAMLIB_CACHE`` if set, else ``data/cache/`` (git-ignored)."""
    env = os.environ.get("GRAMLIB_CACHE")
    return Path(env) if env else data_dir() / "cache"


def digest(path, algorithm):
    """The hex digest of a file by ``algorithm`` (``"md5"``, ``"sha256"``), read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(dataset):
    """Local paths of a data set's files, downloading each once and verifying it every time.

    On first download the file's md5 must equal the official one in the
    manifest; its sha256 is then written beside it (``<file>.sha256``) and
    every later load checks the file against that sha256. The sha256 of the
    official files is not recorded in the repository: the md5 published with
    the data is the reference, and the sha256 file guards the cache. Offline,
    a missing file raises ``RuntimeError`` saying where to put it by hand.
    """

    folder = cache_dir() / dataset
    paths = []
    for entry in downloads(dataset):
        path = folder / entry["file"]
        stamp = path.with_name(path.name + ".sha256")
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            part = path.with_name(path.name + ".part")
            try:
                with urllib.request.urlopen(entry["url"], timeout=60) as src, open(part, "wb") as dst:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        dst.write(chunk)
            except (urllib.error.URLError, OSError) as err:
                part.unlink(missing_ok=True)
                raise RuntimeError(
                    f"could not download {entry['url']} ({err}). Are you offline? Download it by hand "
                    f"and place it at {path}; it is checked against its official md5 {entry['md5']}."
                ) from None
            got = digest(part, "md5")
            if got != entry["md5"]:
                part.unlink()
                raise ValueError(f"{entry['url']} downloaded with md5 {got}, expected {entry['md5']}")
            part.rename(path)
            stamp.unlink(missing_ok=True)
        if not stamp.exists():
            got = digest(path, "md5")
            if got != entry["md5"]:
                raise ValueError(f"{path} has md5 {got}, expected the official {entry['md5']}; delete it")
            stamp.write_text(digest(path, "sha256") + "\n")
        if digest(path, "sha256") != stamp.read_text().strip():
            raise ValueError(f"{path} no longer matches its sha256 in {stamp}; delete both to download again")
        paths.append(path)
    return paths


def read_idx(path):
    """The array stored in a gzipped IDX file (the MNIST format: magic, dims, big-endian data)."""
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except gzip.BadGzipFile:
        raise ValueError(f"{path} is not a gzipped IDX file") from None
    if raw[:2] != b"\x00\x00" or raw[2] not in dtypes:
        raise ValueError(f"{path} is not an IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    values = np.frombuffer(raw, dtypes[raw[2]], offset=4 + 4 * ndim)
    if values.size != np.prod(shape):
        raise ValueError(f"{path} holds {values.size} values, its header says {shape}: the file is truncated")
    return values.reshape(shape)


def read_cifar(path):
    """Images ``(n, 32, 32, 3)`` and labels of every batch in the CIFAR-10 python archive.

    Training batches first, then the test batch (the archive's own split).
    """

    batches = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if name.startswith(("data_batch", "test_batch")):
                    batches[name] = pickle.load(tar.extractfile(member), encoding="bytes")
    except tarfile.ReadError:
        raise ValueError(f"{path} is not a gzipped tar archive (the CIFAR-10 python version)") from None
    if not batches:
        raise ValueError(f"{path} holds no CIFAR-10 batches")
    order = sorted(batches, key=lambda s: (s.startswith("test"), s))
    x = np.concatenate([np.asarray(batches[b][b"data"], np.uint8) for b in order])
    y = np.concatenate([np.asarray(batches[b][b"labels"]) for b in order])
    return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), y.astype(int)
