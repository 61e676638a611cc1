"""Value types that leave the alignment room."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from faceedit.core.errors import AlignmentError


@dataclass(frozen=True)
class AlignmentRecipe:
    """How a face is cut out of a photo; a model's config records the one its data used.

    Attributes:
        name: short id (``ffhq`` for NVIDIA's recipe, ``faces64`` for ours).
        size: output side in pixels.
        scale: multiplier on the FFHQ quad size (1.0 = FFHQ; <1 crops tighter).
        supersample: the quad is warped at ``supersample * size`` and then
            downsampled with an anti-aliasing filter (FFHQ uses 4), on the reference path
            (``align(path="reference")``); the fast path picks its own (1 or 2) at the default 4,
            and any other value sends the warp down the reference path.
        pad_mode: how area outside the photo is filled: ``reflect`` (FFHQ: reflect,
            blur and median fill) or ``constant``.
        landmarks: ``dlib68``, ``mtcnn5`` (QuadNet on the calibrated points),
            ``mtcnn5-linear`` (calibrated to the 68-point definitions) or ``mtcnn5-raw``;
            all give the eye and mouth points the quad needs.
    """

    name: str = "ffhq"
    size: int = 1024
    scale: float = 1.0
    supersample: int = 4
    pad_mode: str = "reflect"
    landmarks: str = "dlib68"

    def __post_init__(self):
        if not (8 <= int(self.size) <= 4096):
            raise AlignmentError(f"alignment size must be in 8..4096, got {self.size}")
        if not (0.2 <= float(self.scale) <= 3.0):
            raise AlignmentError(f"alignment scale must be in 0.2..3.0, got {self.scale}")
        if self.pad_mode not in ("reflect", "constant"):
            raise AlignmentError(f"pad_mode must be 'reflect' or 'constant', got {self.pad_mode!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AlignmentRecipe":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)

    def with_size(self, size: int) -> "AlignmentRecipe":
        return AlignmentRecipe(**{**self.to_dict(), "size": int(size)})


FFHQ = AlignmentRecipe()
# Our shipped 64 px models: FFHQ geometry at 0.6x the quad, see checkpoints/weights/*/MODEL_CARD.md.
FACES64 = AlignmentRecipe(name="faces64", size=64, scale=0.6)


@dataclass(frozen=True)
class AlignedFace:
    """One face cut out of a photo.

    Convention: ``matrix`` is the 3x3 affine map from photo pixel coordinates to crop
    pixel coordinates (x right, y down, pixel centres at integer + 0.5, as OpenCV's
    ``warpAffine`` with ``WARP_INVERSE_MAP`` unset uses them after the half-pixel
    shift). ``quad`` holds the photo coordinates of the crop's corners in order
    top-left, bottom-left, bottom-right, top-right (the FFHQ script's order).

    Attributes:
        crop: ``[size, size, 3]`` RGB uint8.
        matrix: ``[3, 3]`` float64, photo -> crop.
        quad: ``[4, 2]`` float64, photo coordinates.
        landmarks: ``[K, 2]`` float64 photo coordinates (68 for dlib, 5 for MTCNN).
        score: detector confidence (detector-specific scale).
        source_size: ``(width, height)`` of the photo.
        index: position among the photo's faces, left to right.
        detector: which detector found it.
        recipe: the recipe used.
    """

    crop: np.ndarray
    matrix: np.ndarray
    quad: np.ndarray
    landmarks: np.ndarray
    score: float
    source_size: tuple
    index: int = 0
    detector: str = ""
    recipe: AlignmentRecipe = field(default_factory=AlignmentRecipe)

    def metadata(self) -> dict:
        """JSON-ready description (no pixels)."""
        return {"index": self.index, "detector": self.detector, "score": float(self.score),
                "matrix": np.asarray(self.matrix).tolist(), "quad": np.asarray(self.quad).tolist(),
                "source_size": list(self.source_size), "recipe": self.recipe.to_dict(),
                "num_landmarks": int(len(self.landmarks))}
