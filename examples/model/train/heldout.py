"""Writes examples/model/tiny/heldout.json: held-out text for measuring a cache dtype's effect on the model.

Three windows of 256 bytes from each validation address (at a quarter, half and three quarters of it) (corpus.py: never trained on), as token
ids. test/model.test.ts teacher-forces each window and compares the dtypes' logits (top-1 agreement with a
float32 cache, bits per byte).

    python3 examples/model/train/heldout.py [cache dir of the corpus tarball]
"""

import json
import os
import sys

from corpus import load_documents, split

WINDOW = 256


def main():
    _, validation = split(load_documents(sys.argv[1] if len(sys.argv) > 1 else None))
    windows = []
    for name, data in validation:
        for fraction in (0.25, 0.5, 0.75):
            start = int(len(data) * fraction)
            windows.append({"address": name, "offset": start, "ids": list(data[start : start + WINDOW])})
    out = os.path.join(os.path.dirname(__file__), "..", "tiny", "heldout.json")
    with open(out, "w") as f:
        json.dump({"window": WINDOW, "windows": windows}, f, separators=(",", ":"))
        f.write("\n")
    print(f"{out}: {len(windows)} windows of {WINDOW} bytes")


if __name__ == "__main__":
    main()
