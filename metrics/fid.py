"""Real FID and KID: Inception-v3 pool features from the ``pytorch-fid`` package.

``pytorch-fid``'s network is the FID Inception (the TensorFlow graph's weights, ported),
so figures are comparable with published FIDs computed the same way (up to resizing:
our 64 px faces are upsampled to 299 px by the package's bilinear resize, and FID on
a few thousand 64 px faces is not comparable with FID on 50k FFHQ images).

The weights (``pt_inception-2015-12-05-6726825d.pth``) are a download; this module never
fetches them. Without the file in the torch hub cache, :func:`inception_features` raises
:class:`InceptionUnavailableError` naming the file and the folder. Where they are absent,
use the attribute-network metrics (FD-attr, KID-attr in :mod:`faceedit.metrics.distribution`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from faceedit.core.errors import FaceeditError

INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"


class InceptionUnavailableError(FaceeditError, FileNotFoundError):
    """The FID Inception weights are not in the torch hub cache (or pytorch-fid is missing)."""


def inception_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def inception_available() -> bool:
    try:
        import pytorch_fid  # noqa: F401
    except ImportError:
        return False
    return inception_weights_path().is_file()


def _network(device):
    try:
        from pytorch_fid.inception import InceptionV3
    except ImportError as e:
        raise InceptionUnavailableError("real FID/KID need the pytorch-fid package: pip install pytorch-fid") from e
    p = inception_weights_path()
    if not p.is_file():
        raise InceptionUnavailableError(
            f"real FID/KID need the FID Inception weights {p.name} in {p.parent} (the torch hub cache; set TORCH_HOME "
            f"to move it); copy it there from a machine with a network (pytorch-fid downloads it from its GitHub "
            f"release). Without it, use FD-attr/KID-attr")
    return InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(device).eval()


@torch.no_grad()
def inception_features(images, *, device="cpu", batch_size: int = 50) -> np.ndarray:
    """2048-d pool features of uint8 ``[N, H, W, 3]`` images (or tensors in [-1, 1])."""
    from .reconstruction import to_unit

    net = _network(device)
    x = to_unit(images)  # [0, 1], which is what pytorch-fid expects
    out = [net(x[i:i + batch_size].to(device))[0].squeeze(-1).squeeze(-1).cpu().numpy()
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out).astype(np.float64)


def fid_kid(real, fake, *, device="cpu", seed: int = 0) -> dict:
    """``{"FID", "KID", "KID_ci_low", "KID_ci_high", "n_real", "n_fake"}`` on Inception features."""
    from .distribution import frechet_distance, kid

    fr, ff = inception_features(real, device=device), inception_features(fake, device=device)
    k = kid(ff, fr, seed=seed)
    return {"FID": frechet_distance(ff, fr), "KID": k["kid"], "KID_ci_low": k["ci_low"], "KID_ci_high": k["ci_high"],
            "n_real": len(fr), "n_fake": len(ff)}


__all__ = ["inception_features", "fid_kid", "inception_available", "InceptionUnavailableError"]
