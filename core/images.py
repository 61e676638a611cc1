"""Images: generator tensors <-> uint8 arrays, and photo files as real users have them.

Conversion: generator output ``[N, 3, H, W]`` in [-1, 1] <-> ``[N, H, W, 3]`` uint8.

Input: EXIF orientation applied; RGBA/LA (composited on white), P, CMYK, I;16, L and
other modes converted to RGB; content sniffed, not trusted from the extension (a PNG
named ``.jpg`` is fine); a pixel limit against decompression bombs; truncated or
non-image files raise :class:`ImageLoadError` that names the fix.

Output: PNG/JPEG written atomically; an output never replaces an input file.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageLoadError
from .files import atomic_write_bytes

__all__ = ["ImageLoadError", "DEFAULT_MAX_PIXELS", "MAX_FILE_BYTES", "tensor_to_uint8", "uint8_to_tensor",
           "load_image", "probe_image", "decode_image", "to_rgb", "encode_image", "save_image", "make_grid"]

DEFAULT_MAX_PIXELS = 50_000_000  # 50 MP: larger than any phone photo, far below a bomb
MAX_FILE_BYTES = 200 * 1024 * 1024


def tensor_to_uint8(img) -> np.ndarray:
    """Generator output ``[N, 3, H, W]`` in [-1, 1] -> ``[N, H, W, 3]`` uint8."""
    import torch

    x = (img.detach().float().clamp(-1, 1) + 1) * 127.5
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def uint8_to_tensor(arr: np.ndarray, device=None):
    """``[H, W, 3]`` or ``[N, H, W, 3]`` uint8 -> ``[N, 3, H, W]`` float in [-1, 1]."""
    import torch

    a = np.asarray(arr)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"expected [H, W, 3] or [N, H, W, 3] RGB, got {a.shape}")
    a = np.ascontiguousarray(a) if a.flags.writeable else np.array(a)  # torch refuses read-only memory
    t = torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1
    return t.to(device) if device is not None else t


def load_image(path, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = MAX_FILE_BYTES) -> np.ndarray:
    """Read a photo as ``[H, W, 3]`` RGB uint8 with its EXIF orientation applied.

    Args:
        path: image file (JPEG, PNG, WebP, BMP, TIFF, GIF (first frame), ...).
        max_pixels: refuse images with more pixels than this (``--max-pixels``).
        max_bytes: refuse files larger than this (a server takes a lower limit than the CLI's).
    Raises:
        ImageLoadError: missing, empty, unreadable, truncated, not an image, or too large.
    """
    path = _check_file(path, max_bytes)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageLoadError(f"{path} cannot be read ({e.strerror or e}); check its permissions") from e
    return decode_image(data, name=str(path), max_pixels=max_pixels)


def probe_image(path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple:
    """Check from its header alone that :func:`load_image` will take a file (nothing decoded).

    For the checks a command makes on all its inputs before it loads a model: missing,
    empty, unreadable, not an image, or over ``max_pixels``. A file damaged past its header
    passes here and fails in :func:`load_image`.

    Args:
        path: image file.
        max_pixels: the pixel limit, as for :func:`load_image`.
    Returns:
        ``(width, height)`` as the header gives them.
    Raises:
        ImageLoadError: as :func:`load_image`, for what the header shows.
    """
    path = _check_file(path)
    try:
        with open(path, "rb") as f:
            with Image.open(f) as im:
                w, h = im.size
    except OSError as e:
        if isinstance(e, UnidentifiedImageError):
            raise ImageLoadError(_not_an_image(str(path), e)) from e
        if isinstance(e, (PermissionError, IsADirectoryError)):
            raise ImageLoadError(f"{path} cannot be read ({e.strerror or e}); check its permissions") from e
        raise ImageLoadError(_undecodable(str(path), e)) from e
    except Image.DecompressionBombError as e:
        raise ImageLoadError(_pillow_bomb(str(path), e)) from e
    except (SyntaxError, ValueError, EOFError) as e:
        raise ImageLoadError(_undecodable(str(path), e)) from e
    _check_size(str(path), w, h, max_pixels)
    return w, h


def _check_file(path, max_bytes: int = MAX_FILE_BYTES) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"{path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise ImageLoadError(f"{path} is empty (0 bytes)")
    if size > max_bytes:
        raise ImageLoadError(f"{path} is {size / 2**20:.0f} MiB, over the {max_bytes / 2**20:.0f} MiB "
                             f"limit for a photo; downscale it first")
    return path


def _check_size(name: str, w: int, h: int, max_pixels: int) -> None:
    if w * h > max_pixels:
        raise ImageLoadError(f"{name} is {w}x{h} = {w * h / 1e6:.0f} MP, over the limit of "
                             f"{max_pixels / 1e6:.0f} MP (raise it with --max-pixels, or max_pixels= in Python, "
                             f"if you trust the file)")
    if w < 1 or h < 1:
        raise ImageLoadError(f"{name} has no pixels ({w}x{h})")


def _not_an_image(name: str, e: BaseException) -> str:
    return f"{name} is not an image faceedit can read ({type(e).__name__}); pass a JPEG or PNG photo"


def _undecodable(name: str, e: BaseException) -> str:
    return (f"{name} could not be decoded ({e}); the file may be truncated or corrupt, "
            f"re-export or re-download it")


def _pillow_bomb(name: str, e: BaseException) -> str:
    # Pillow's own guard fires in open(), before ours; --max-pixels does not raise it.
    return (f"{name} is too large, over the limit for a photo: its header claims more pixels than Pillow "
            f"will decode ({e}), a limit that --max-pixels does not raise; downscale it first")


def decode_image(data: bytes, *, name: str = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode image bytes (see :func:`load_image`)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            _check_size(name, *im.size, max_pixels)
            im.load()
            return to_rgb(ImageOps.exif_transpose(im))
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageLoadError(_pillow_bomb(name, e)) from e
    except UnidentifiedImageError as e:
        raise ImageLoadError(_not_an_image(name, e)) from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageLoadError(_undecodable(name, e)) from e


def to_rgb(im: Image.Image) -> np.ndarray:
    """Any PIL mode -> RGB uint8 array; transparency is composited on white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if a.max() > 255 else 255.0
        a = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        a = (a - a.min()) / max(a.max() - a.min(), 1e-12)
        return np.repeat((a * 255 + 0.5).astype(np.uint8)[..., None], 3, axis=2)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))


def encode_image(arr: np.ndarray, fmt: str = "PNG", quality: int = 95, compress_level: int = 6) -> bytes:
    """``[H, W, 3]`` uint8 (or float in [0, 1]) -> encoded bytes (``compress_level``: PNG's zlib level)."""
    a = np.asarray(arr)
    if a.dtype != np.uint8:
        a = np.clip(a * 255.0 + 0.5, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    kw = {"quality": quality} if fmt.upper() in ("JPEG", "JPG") else {}
    if fmt.upper() == "PNG":
        kw["compress_level"] = int(compress_level)
    Image.fromarray(a).save(buf, format="JPEG" if fmt.upper() == "JPG" else fmt.upper(), **kw)
    return buf.getvalue()


#: zlib level of the PNG files :func:`save_image` writes: a 1.2 MP photo encodes in about 0.11 s at
#: level 1 against 0.4 s at Pillow's default 6, for a file about 20% larger (the same pixels).
SAVE_PNG_LEVEL = 1


def save_image(path, arr: np.ndarray, *, protect=()) -> Path:
    """Write an image atomically; the format follows the extension (PNG by default, ``SAVE_PNG_LEVEL``)."""
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(path.suffix.lower(), "PNG")
    return atomic_write_bytes(path, encode_image(arr, fmt, compress_level=SAVE_PNG_LEVEL), protect=protect)


def make_grid(images: np.ndarray, cols: int | None = None, pad: int = 2) -> np.ndarray:
    """``[N, H, W, 3]`` uint8 -> one grid image (white padding)."""
    n, h, w, c = images.shape
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    for i, im in enumerate(images):
        r, k = divmod(i, cols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = im
    return grid
