"""A packed face data set: one ``.npz`` (no pickles) holding JPEG bytes, labels and names.

Layout (all arrays; read with ``allow_pickle=False``):

* ``jpeg``: uint8, every image's JPEG bytes concatenated;
* ``offsets``: int64 ``[N + 1]``, image ``i`` is ``jpeg[offsets[i]:offsets[i + 1]]``;
* ``label_<name>``: one array ``[N]`` per label (CelebA attributes as -1/0/1 int8 with
  0 = unknown, ``age`` float32 with NaN = unknown, ``gender`` int8 0 male / 1 female /
  -1 unknown, ``race`` int8, -1 unknown, ``source`` int8 0 CelebA / 1 UTKFace);
* ``names``: fixed-width unicode array of the source file names;
* ``meta``: a JSON string (recipe, split, counts) in a 0-d unicode array.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from .files import atomic_write_bytes


def write_pack(path, jpegs: list, labels: dict, names: list, meta: dict) -> Path:
    """Write a pack atomically (see module docstring)."""
    offsets = np.zeros(len(jpegs) + 1, np.int64)
    offsets[1:] = np.cumsum([len(j) for j in jpegs])
    arrays: dict[str, np.ndarray] = {"jpeg": np.frombuffer(b"".join(jpegs), np.uint8), "offsets": offsets,
                                     "names": np.array(names, dtype=str), "meta": np.array(json.dumps(meta))}
    for k, v in labels.items():
        v = np.asarray(v)
        if len(v) != len(jpegs):
            raise ValueError(f"label {k!r} has {len(v)} rows for {len(jpegs)} images")
        arrays[f"label_{k}"] = v
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds after allow_pickle: bool
    return atomic_write_bytes(path, buf.getvalue())


class Pack:
    """Read access to a pack; ``images()`` decodes everything to ``[N, H, W, 3]`` uint8."""

    def __init__(self, path):
        self.path = path
        with np.load(path, allow_pickle=False) as z:
            self.jpeg = z["jpeg"]
            self.offsets = z["offsets"]
            self.names = z["names"]
            self.meta = json.loads(str(z["meta"]))
            self.labels = {k[6:]: z[k] for k in z.files if k.startswith("label_")}

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def image(self, i: int) -> np.ndarray:
        import cv2

        a = cv2.imdecode(self.jpeg[self.offsets[i]:self.offsets[i + 1]], cv2.IMREAD_COLOR)
        if a is None:
            raise RuntimeError(f"{self.path}: image {i} does not decode (the pack is damaged; rebuild it)")
        return cv2.cvtColor(a, cv2.COLOR_BGR2RGB)

    def images(self, indices=None) -> np.ndarray:
        idx = range(len(self)) if indices is None else indices
        return np.stack([self.image(i) for i in idx])
