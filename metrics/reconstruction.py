"""How close a reconstruction is to its target: MSE, PSNR, SSIM, MS-SSIM, LPIPS, identity.

Convention: every function takes two image batches of the same shape, either
``[N, H, W, 3]`` uint8 arrays or ``[N, 3, H, W]`` float tensors in ``[-1, 1]`` (the
generator's range); both are mapped to ``[0, 1]`` first, so MSE and PSNR are stated on
the ``[0, 1]`` range (PSNR = ``10 log10(1 / MSE)``, capped at 100 dB for identical images).
Per-image values come back as float arrays ``[N]``.

SSIM and MS-SSIM come from ``pytorch_msssim`` (Gaussian window 11, sigma 1.5, K1 0.01,
K2 0.03, as Wang et al.). MS-SSIM uses 5 scales and is only defined when the smaller side
exceeds 160 px; below that :func:`ms_ssim` raises and :func:`reconstruction_metrics`
leaves it out. LPIPS comes from the ``lpips`` package; its backbone weights are a
torchvision download, so :class:`LPIPS` refuses to run without the file in the torch hub
cache rather than fall back to random weights.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from faceedit.core.errors import FaceeditError, MetricsError

log = logging.getLogger(__name__)

MS_SSIM_MIN_SIDE = 161  # 5 scales, window 11: (11 - 1) * 2 ** 4 < side
PSNR_CAP = 100.0


class LPIPSUnavailableError(FaceeditError, FileNotFoundError):
    """LPIPS' backbone weights are not in the torch hub cache."""


def to_unit(images) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` / ``[H, W, 3]`` or float ``[N, 3, H, W]`` in [-1, 1] -> float
    ``[N, 3, H, W]`` in [0, 1]."""
    if isinstance(images, torch.Tensor):
        x = images[None] if images.ndim == 3 else images
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise MetricsError(f"image tensors must be [N, 3, H, W] in [-1, 1], got {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            raise MetricsError("pass uint8 images as a numpy [N, H, W, 3] array, float images as a tensor in [-1, 1]")
        return ((x.float() + 1) / 2).clamp(0, 1)
    a = np.asarray(images)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8:
        raise MetricsError(f"image arrays must be [N, H, W, 3] uint8, got {a.shape} {a.dtype}")
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 255.0


def _pair(a, b):
    x, y = to_unit(a), to_unit(b)
    if x.shape != y.shape:
        raise MetricsError(f"image batches differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    return x, y.to(x.device)


def mse(a, b) -> np.ndarray:
    """Mean squared error per image on the [0, 1] range."""
    x, y = _pair(a, b)
    return ((x - y) ** 2).mean(dim=(1, 2, 3)).detach().cpu().double().numpy()


def psnr(a, b) -> np.ndarray:
    """PSNR in dB per image on the [0, 1] range (100 dB when identical)."""
    m = mse(a, b)
    with np.errstate(divide="ignore"):
        return np.minimum(10 * np.log10(1.0 / m), PSNR_CAP)


def ssim(a, b) -> np.ndarray:
    """SSIM per image (pytorch_msssim, data range 1); needs sides of at least 11 px."""
    from pytorch_msssim import ssim as _ssim

    x, y = _pair(a, b)
    if min(x.shape[-2:]) < 11:
        raise MetricsError(f"SSIM needs images of at least 11x11 px, got {tuple(x.shape[-2:])}")
    return _ssim(x, y, data_range=1.0, size_average=False).detach().cpu().double().numpy()


def ms_ssim(a, b) -> np.ndarray:
    """MS-SSIM per image (5 scales); only for images whose smaller side is at least 161 px.

    Raises:
        ValueError: the images are too small for 5 scales (use :func:`ssim`).
    """
    from pytorch_msssim import ms_ssim as _ms

    x, y = _pair(a, b)
    if min(x.shape[-2:]) < MS_SSIM_MIN_SIDE:
        raise MetricsError(f"MS-SSIM (5 scales, window 11) needs a smaller side of at least {MS_SSIM_MIN_SIDE} px, "
                           f"got {tuple(x.shape[-2:])}; report SSIM for images this small")
    return _ms(x, y, data_range=1.0, size_average=False).detach().cpu().double().numpy()


# torchvision's file names for the backbones lpips builds on.
LPIPS_BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth",
                        "squeeze": "squeezenet1_1-b8a52dc0.pth"}


def lpips_backbone_path(net: str = "vgg") -> Path:
    """Where torchvision looks for LPIPS' backbone weights (the torch hub cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONE_FILES[net]


def lpips_available(net: str = "vgg") -> bool:
    return lpips_backbone_path(net).is_file()


class LPIPS:
    """LPIPS distance (Zhang et al. 2018) through the ``lpips`` package.

    Args:
        net: ``vgg`` (the variant StyleGAN's PPL uses) or ``alex``.
        device: where to run.
        random_backbone: use randomly initialised backbone weights (for exercising code in
            tests only; the values are meaningless).
    Raises:
        LPIPSUnavailableError: the backbone file is not in the torch hub cache; the message
            names the file and the folder to put it in.
    """

    def __init__(self, net: str = "vgg", device="cpu", random_backbone: bool = False):
        if net not in LPIPS_BACKBONE_FILES:
            raise MetricsError(f"LPIPS net must be one of {sorted(LPIPS_BACKBONE_FILES)}, got {net!r}")
        p = lpips_backbone_path(net)
        if not random_backbone and not p.is_file():
            raise LPIPSUnavailableError(
                f"LPIPS ({net}) needs torchvision's backbone weights {p.name} in {p.parent} (the torch hub "
                f"cache; set TORCH_HOME to move it). Copy the file there from a machine with a network "
                f"(it is what `torchvision.models.{'vgg16' if net == 'vgg' else 'alexnet'}(weights='DEFAULT')` "
                f"downloads); faceedit never substitutes random weights")
        import lpips

        self.name = f"lpips-{net}" + ("-random" if random_backbone else "")
        self.model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=random_backbone, verbose=False).to(device).eval()
        for p_ in self.model.parameters():
            p_.requires_grad_(False)
        self.device = torch.device(device)

    def distance_tensor(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Differentiable: tensors in [-1, 1] ``[N, 3, H, W]`` -> ``[N]``."""
        return self.model(x.to(self.device), y.to(self.device), normalize=False).reshape(-1)

    @torch.no_grad()
    def __call__(self, a, b, batch_size: int = 64) -> np.ndarray:
        x, y = _pair(a, b)
        out = [self.distance_tensor(x[i:i + batch_size] * 2 - 1, y[i:i + batch_size] * 2 - 1)
               for i in range(0, len(x), batch_size)]
        return torch.cat(out).cpu().double().numpy()


def reconstruction_metrics(target, recon, *, lpips: LPIPS | None = None, identity=None) -> dict:
    """All reconstruction figures that apply, as per-image arrays.

    Args:
        target, recon: image batches (see the module's convention).
        lpips: an :class:`LPIPS` instance to include LPIPS (``lpips-vgg``), or None.
        identity: a :class:`faceedit.metrics.identity.IdentityEncoder` to include the identity
            distance and similarity (aligned crops), or None.
    Returns:
        ``{"mse", "psnr", "ssim", ["ms_ssim"], [lpips.name], ["identity_distance", "identity_similarity"]}``.
    """
    out = {"mse": mse(target, recon), "psnr": psnr(target, recon), "ssim": ssim(target, recon)}
    if min(to_unit(target).shape[-2:]) >= MS_SSIM_MIN_SIDE:
        out["ms_ssim"] = ms_ssim(target, recon)
    if lpips is not None:
        out[lpips.name] = lpips(target, recon)
    if identity is not None:
        d = identity.distance(target, recon)
        out["identity_distance"] = d
        out["identity_similarity"] = identity.similarity_from_distance(d)
    return out


__all__ = ["mse", "psnr", "ssim", "ms_ssim", "LPIPS", "LPIPSUnavailableError", "lpips_available",
           "lpips_backbone_path", "reconstruction_metrics", "to_unit"]
