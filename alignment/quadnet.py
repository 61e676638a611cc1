"""QuadNet: the FFHQ quad's four points re-estimated on a crop that MTCNN's points framed.

MTCNN's output network sees a face at 48x48 px, so its eye distance and eye-to-mouth
distance scatter by 2.5-3% (sd) around the 68-point model's, at every face size (measured
on 89x109 CelebA photos and on 190 px faces of the in-the-wild photos alike); sub-pixel
crops, mirror averaging, jittered boxes and the linear calibration of
:mod:`faceedit.alignment.mtcnn5` remove the bias, not that scatter. The quad side is
``max(2 eye distance, 1.8 eye-to-mouth)``, so MTCNN quads disagree with 68-point quads in
scale. QuadNet is a small CNN (1.24 M parameters, fp16, shipped as ``quadnet.safetensors``
with its training record in ``quadnet.json``) that looks at the 64 px grey crop the
calibrated MTCNN points frame (FFHQ quad at 0.6x, the faces64 framing) and predicts where
the 68-point model's eye-contour means and outer mouth corners lie in it; the prediction is
averaged with that on the mirrored crop (averaging over re-framed crops as well gave
nothing: 90.1% vs 90.4% agreement on 292 test faces).

It is trained (``faceedit train-quadnet``, code in ``faceedit.training.quadnet``) on
TRAIN-split CelebA and UTKFace faces only, with dlib's 68 points as ``align`` finds them
(``landmarks68_averaged``) as targets: it makes MTCNN crops match dlib68 crops, and
inherits dlib's definitions, not an independent judgement of where eyes are. What it does to agreement on
test faces is in
``bench/results/alignment/alignment.md``.

No library offers this (a 5-point detector whose points follow the 68-point markup), hence
the module.
"""
from __future__ import annotations

import functools
import os

import numpy as np

from .errors import AlignmentError, ModelFileError
from .ffhq import apply_matrix, ffhq_quad, warp_quad

QUADNET_FILE = "quadnet.safetensors"
CROP = 64  # crop side the net sees
CROP_SCALE = 0.6  # its quad scale (the faces64 framing: eyes and mouth fill the middle of the crop)


def quad_crop(image: np.ndarray, points: np.ndarray, size: int = CROP, *, scale: float = CROP_SCALE):
    """The crop the FFHQ quad (at ``scale``) of ``points`` frames, at ``size`` px, and its photo->crop matrix.

    A plain warp (:func:`~faceedit.alignment.ffhq.warp_quad`, edge pixels repeated outside the
    photo), not the full recipe of :func:`faceedit.alignment.align_landmarks`: the net only
    needs to see the face.
    """
    return warp_quad(np.ascontiguousarray(image), ffhq_quad(points, scale)[0], size)


def new_quadnet(width: int = 40):
    """An untrained QuadNet (``torch.nn.Module``) with ``width`` channels in its first layer."""
    import torch
    from torch import nn

    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                             nn.Conv2d(cout, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class QuadNet(nn.Module):
        """64x64 grey crop -> 8 numbers: eye, eye, mouth corner, mouth corner (x, y) as fractions of the crop."""

        def __init__(self):
            super().__init__()
            w = width
            self.features = nn.Sequential(block(1, w), block(w, 2 * w), block(2 * w, 4 * w),
                                          block(4 * w, 4 * w))  # 64 -> 4
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * 16, 128), nn.ReLU(inplace=True),
                                      nn.Linear(128, 8))
            self.register_buffer("template", torch.zeros(8))  # mean target, the head predicts the offset

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """``x``: ``[N, 1, 64, 64]`` float in 0..1 -> ``[N, 8]``."""
            return self.template + 0.1 * self.head(self.features((x - 0.5) / 0.25))

    return QuadNet()


# Mirroring a crop swaps image-left and image-right points: (eye, eye, mouth, mouth) -> indices.
_MIRROR4 = [1, 0, 3, 2]


def mirror_targets(t):
    """``[..., 8]`` float targets of a crop (a numpy array or a torch tensor) -> those of the mirrored
    crop (x -> 1 - x, left and right swapped); a new array of the same kind."""
    p = t.reshape(*t.shape[:-1], 4, 2)[..., _MIRROR4, :]  # indexing with a list copies
    p[..., 0] = 1.0 - p[..., 0]
    return p.reshape(t.shape)


@functools.lru_cache(maxsize=2)
def load_quadnet(path: str | None = None):
    """The shipped QuadNet in eval mode (float32 on the CPU); ``path`` overrides the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = path or os.path.join(os.path.dirname(os.path.abspath(__file__)), QUADNET_FILE)
    if not os.path.isfile(path):
        raise ModelFileError(f"QuadNet weights {path} are missing; reinstall faceedit, or align with "
                             f"landmarks='mtcnn5-linear'")
    try:
        state = {k: v.float() for k, v in load_file(path).items()}
        net = new_quadnet(int(state["features.0.0.weight"].shape[0]))
        net.load_state_dict(state)
    except (SafetensorError, OSError, RuntimeError, KeyError) as e:
        raise ModelFileError(f"cannot read the QuadNet weights {path} ({e}); reinstall faceedit, or align with "
                             f"landmarks='mtcnn5-linear'") from e
    return net.eval()


@functools.lru_cache(maxsize=4)
def quadnet_on(device: str):
    """A copy of the shipped QuadNet (:func:`load_quadnet`) on ``device`` (``"cuda"``, ...), cached per device."""
    import copy

    return copy.deepcopy(load_quadnet()).to(device)


def predict_crops(net, crops: np.ndarray, mirror: bool = True) -> np.ndarray:
    """``[N, 8]`` predictions for ``[N, S, S, 3]`` RGB uint8 crops, averaged with the mirrored crops' if ``mirror``
    (on the device ``net`` is on)."""
    import cv2
    import torch

    grey = np.stack([cv2.cvtColor(np.ascontiguousarray(c), cv2.COLOR_RGB2GRAY) for c in crops])
    x = torch.from_numpy(grey)[:, None].to(next(net.parameters()).device).float() / 255.0
    with torch.no_grad():
        p = net(x).double().cpu().numpy()
        if mirror:
            p = 0.5 * (p + mirror_targets(net(x.flip(3)).double().cpu().numpy()))
    return p


def quadnet_points(image: np.ndarray, points5: np.ndarray, *, net=None, mirror: bool = True,
                   device=None) -> np.ndarray:
    """Calibrated MTCNN points with eyes and mouth corners re-estimated by QuadNet.

    Args:
        image: ``[H, W, 3]`` RGB uint8 photo.
        points5: ``[5, 2]`` calibrated MTCNN points (:func:`faceedit.alignment.calibrate_mtcnn5`):
            they frame the crop the net looks at.
        net: a QuadNet (default: the shipped one, :func:`load_quadnet`).
        mirror: also run the mirrored crop and average.
        device: where the shipped net runs when ``net`` is not given (``None``: the CPU).
    Returns:
        ``[5, 2]`` photo coordinates; the nose is the input's.
    """
    p5 = np.asarray(points5, np.float64)
    if p5.shape != (5, 2) or not np.isfinite(p5).all():
        raise AlignmentError(f"expected finite [5, 2] MTCNN points, got shape {p5.shape}")
    crop, M = quad_crop(image, p5)
    if net is None:
        net = load_quadnet() if device is None or str(device) == "cpu" else quadnet_on(str(device))
    q = predict_crops(net, crop[None], mirror)[0].reshape(4, 2) * CROP
    pts = apply_matrix(np.linalg.inv(M), q)
    return np.stack([pts[0], pts[1], p5[2], pts[2], pts[3]])
