"""What a run reads: one rule for which files are photos, and the checks made before any model loads.

The rule, the same for every command that takes photos (``align``, ``invert``, ``edit``,
``score``):

* a file named on the command line is read as a photo whatever its extension: its content
  decides (a PNG named ``.jpg`` is fine, a text file named ``.jpg`` is refused). ``edit``
  reads a ``.safetensors`` file as a latent instead;
* a folder gives its files whose suffix is one of :data:`PHOTO_EXTS` (sorted; recursively
  for ``align``), GIF included (its first frame, as ``load_image`` reads it).

:func:`check_photos` then reads each photo's header (``faceedit.core.images.probe_image``:
missing, empty, unreadable, not an image, over the pixel limit) so that a bad file is
reported in a second, before a model is loaded, and the good ones still run.
"""
from __future__ import annotations

from pathlib import Path

from faceedit.core.errors import PipelineError

#: Suffixes of the files a folder input gives (files named on the command line are sniffed instead).
PHOTO_EXTS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
#: The suffix `faceedit edit` reads as a latent file rather than a photo.
LATENT_SUFFIX = ".safetensors"


def folder_photos(folder, *, recursive: bool = False) -> list:
    """The photos of a folder: files with a :data:`PHOTO_EXTS` suffix, sorted (hidden files left out)."""
    folder = Path(folder)
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(q for q in found if q.is_file() and q.suffix.lower() in PHOTO_EXTS
                  and not any(part.startswith(".") for part in q.relative_to(folder).parts))


def collect_photos(inputs) -> list:
    """Files as given, folders expanded to their photos (sorted, not recursive).

    Args:
        inputs: paths of photos or folders.
    Returns:
        A list of ``Path``.
    Raises:
        PipelineError: a folder holds no photo.
    """
    photos = []
    for p in map(Path, inputs):
        if p.is_dir():
            found = folder_photos(p)
            if not found:
                raise PipelineError(f"folder {p} holds no photos ({', '.join(sorted(PHOTO_EXTS))})")
            photos.extend(found)
        else:
            photos.append(p)
    return photos


def check_photos(photos, *, max_pixels: int | None = None) -> tuple:
    """Read each photo's header; split the photos into those that will load and those that will not.

    Args:
        photos: photo paths.
        max_pixels: the pixel limit (default ``faceedit.core.images.DEFAULT_MAX_PIXELS``).
    Returns:
        ``(good, failures)``: the photos that passed, in order, and ``[(path, reason)]`` of
        the others, the reason as ``"ImageLoadError: ..."``.
    """
    from faceedit.core.images import DEFAULT_MAX_PIXELS, ImageLoadError, probe_image

    good, failures = [], []
    for p in photos:
        try:
            probe_image(p, max_pixels=DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels)
        except ImageLoadError as e:
            failures.append((str(p), f"{type(e).__name__}: {e}"))
            continue
        good.append(Path(p))
    return good, failures


__all__ = ["PHOTO_EXTS", "LATENT_SUFFIX", "folder_photos", "collect_photos", "check_photos"]
