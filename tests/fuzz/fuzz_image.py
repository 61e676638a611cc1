"""Fuzz target: ``faceedit.core.images.decode_image`` (the photo loader: sniffing, EXIF, modes, size guard).

Documented errors: ``ImageLoadError``. Run through ``run_fuzz.py``.
"""
import io
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import atheris  # noqa: E402

with atheris.instrument_imports(include=["faceedit", "PIL"]):
    import numpy as np
    from PIL import Image

    from faceedit.core.images import ImageLoadError, decode_image

ALLOWED = (ImageLoadError,)


def one_input(data: bytes) -> None:
    arr = decode_image(data, name="fuzz", max_pixels=4_000_000)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise AssertionError(f"decode_image returned {arr.dtype} {arr.shape}")


def seeds() -> list:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)
    out = []
    for mode in ("RGB", "L", "LA", "RGBA", "P", "CMYK", "I;16", "1"):
        im = Image.fromarray(img)
        im = im.convert(mode) if mode != "I;16" else Image.frombytes("I;16", (10, 12), bytes(240))
        for fmt in ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"):
            buf = io.BytesIO()
            try:
                kw = {}
                if fmt == "JPEG":
                    ex = Image.Exif()
                    ex[0x0112] = 6
                    kw["exif"] = ex.tobytes()
                im.save(buf, fmt, **kw)
            except (OSError, ValueError, KeyError):
                continue
            out.append(buf.getvalue())
    return out


if __name__ == "__main__":
    from _harness import main

    main("image", one_input, ALLOWED, seeds)
