"""Draw the README's edit strips: one inversion of a photo per model, every attribute at a row of strengths.

    OMP_NUM_THREADS=1 python bench/scripts/edit_strips.py --out docs/astronaut_edit_strips.png   # about 30 s (CPU)

For each model (``faces64`` inverted into W+, ``faces64-wpp`` into W++, each with its default
method), the photo's largest face is aligned and inverted once through :class:`faceedit.Pipeline`,
then each attribute's shipped direction is applied at each strength (``--strengths``, the
``faceedit edit --strength`` unit) and the 64 px crops are tiled: attributes in rows,
strengths in columns, the two models side by side, a label per row and per block. Edits past
the prior check (``faceedit.defaults.FAR_FROM_PRIOR``) are drawn anyway (``force``), since the
strip is there to show where an edit stops being one. The figure is written atomically.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
MODELS = (("faces64", "w+", "W+"), ("faces64-wpp", "wpp", "W++"))
ATTRS = ("smile", "age", "male", "eyeglasses", "yaw", "bangs")


def strips(model: str, space: str, photo: np.ndarray, attrs, strengths, device: str = "cpu") -> np.ndarray:
    """``[len(attrs), len(strengths), R, R, 3]`` uint8 crops of the photo's face edited along each attribute."""
    from faceedit.pipeline import Pipeline

    pipe = Pipeline(model, space=space, device=device, force=True)
    lat = pipe.invert(pipe.align(photo)[:1])
    return np.stack([np.concatenate([pipe.synthesize(pipe.edit(lat, {a: float(s)})) for s in strengths])
                     for a in attrs])


def tile(blocks: list, titles: list, attrs, pad: int = 4, label_w: int = 72, title_h: int = 16) -> np.ndarray:
    """The blocks side by side on white, with the attribute names on the left and a title over each block."""
    import cv2

    rows, cols, r = blocks[0].shape[0], blocks[0].shape[1], blocks[0].shape[2]
    bw = cols * (r + pad)
    canvas = np.full((title_h + rows * (r + pad), label_w + len(blocks) * (bw + 3 * pad), 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for i, a in enumerate(attrs):
        cv2.putText(canvas, a, (2, title_h + i * (r + pad) + r // 2 + 4), font, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    for b, (block, title) in enumerate(zip(blocks, titles)):
        x0 = label_w + b * (bw + 3 * pad)
        cv2.putText(canvas, title, (x0, title_h - 4), font, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
        for i in range(rows):
            for j in range(cols):
                y, x = title_h + i * (r + pad), x0 + j * (r + pad)
                canvas[y:y + r, x:x + r] = block[i, j]
    return canvas


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photo", default=str(REPO / "examples" / "astronaut.jpg"))
    ap.add_argument("--strengths", default="-3,-2,-1,0,1,2,3")
    ap.add_argument("--attrs", default=",".join(ATTRS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", required=True, help="PNG to write (e.g. docs/astronaut_edit_strips.png).")
    a = ap.parse_args(argv)
    from PIL import Image

    from faceedit.core.files import atomic_write_bytes
    from faceedit.core.images import load_image

    photo = load_image(a.photo)
    strengths = [float(s) for s in a.strengths.split(",")]
    attrs = [s.strip() for s in a.attrs.split(",") if s.strip()]
    blocks = [strips(m, sp, photo, attrs, strengths, a.device) for m, sp, _ in MODELS]
    span = f"strength {strengths[0]:g} .. {strengths[-1]:+g}"
    fig = tile(blocks, [f"{m}, {name} ({span})" for m, _, name in MODELS], attrs)
    import io

    buf = io.BytesIO()
    Image.fromarray(fig).save(buf, format="PNG")
    atomic_write_bytes(a.out, buf.getvalue())
    print(f"wrote {a.out}: {len(attrs)} attributes x {len(strengths)} strengths x {len(MODELS)} models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
