"""Reconstruction losses for inversion, and NVIDIA's noise regulariser.

Every image loss works on ``[B, 3, H, W]`` images in [-1, 1] and returns one value per
image ``[B]``, so that a batch of inversions is exactly a set of independent ones (Adam
is element-wise). Each loss has ``prepare(target)`` (computed once per batch: target
features) and ``__call__(img, prepared) -> [B]``.

* :class:`PixelMSE`: mean squared error over pixels and channels.
* :class:`LPIPSLoss`: LPIPS (``lpips`` package, VGG trunk by default) on images
  area-downsampled to 256 px when larger, as NVIDIA's projector does. The VGG16 trunk
  comes from torchvision's download (``vgg16-397923af.pth``); where it is missing the
  loss raises :class:`MissingWeightsError` naming the exact file and folder, never a
  silent fallback. ``pnet_rand=True`` runs a random trunk (tests only: meaningless values).
* :class:`DiscFeatureLoss` (``--perceptual disc``): distance between the shipped
  discriminator's per-scale activations (``Discriminator.features``), each unit-normalised
  over channels as LPIPS does, summed over channels, averaged over positions, then
  averaged over the scales. It needs no download.
* :func:`noise_regularization` / :func:`normalize_noise_`: NVIDIA's multi-scale
  autocorrelation penalty on optimised noise maps, and their re-normalisation to zero
  mean and unit variance after every step.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from faceedit.core.errors import FaceeditError, InversionError

LPIPS_TRUNK_FILES = {
    "vgg": ("vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
    "alex": ("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
    "squeeze": ("squeezenet1_1-b8a52dc0.pth", "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth"),
}

log = logging.getLogger(__name__)


class MissingWeightsError(FaceeditError, RuntimeError):
    """A pretrained backbone file that is not on this machine (no download is attempted)."""


class PixelMSE:
    """Mean squared error per image, on the [-1, 1] scale."""

    name = "mse"

    def prepare(self, target: torch.Tensor) -> torch.Tensor:
        return target

    def __call__(self, img: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (img.float() - target.float()).square().flatten(1).mean(1)


def lpips_trunk_path(net: str = "vgg") -> Path:
    """Where torchvision looks for the LPIPS trunk's weights (the torch hub cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_TRUNK_FILES[net][0]


def _area_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(x, size=(size, size), mode="area") if x.shape[-1] > size else x


class LPIPSLoss(torch.nn.Module):
    """LPIPS distance per image (see the module docstring).

    Args:
        net: ``vgg`` (NVIDIA's projector uses VGG16 features), ``alex`` or ``squeeze``.
        max_size: images larger than this are area-downsampled to it first (256).
        pnet_rand: random trunk weights, for tests where the trunk file is absent.
    Raises:
        MissingWeightsError: the trunk file is not in the torch hub cache.
    """

    name = "lpips"

    def __init__(self, net: str = "vgg", *, max_size: int = 256, pnet_rand: bool = False):
        super().__init__()
        if net not in LPIPS_TRUNK_FILES:
            raise InversionError(f"LPIPS net must be one of {', '.join(LPIPS_TRUNK_FILES)}, got {net!r}")
        path = lpips_trunk_path(net)
        if not pnet_rand and not path.is_file():
            fname, url = LPIPS_TRUNK_FILES[net]
            raise MissingWeightsError(
                f"LPIPS needs torchvision's {net} weights {fname} in {path.parent} (the torch hub cache; "
                f"set TORCH_HOME to move it). This machine cannot download it: fetch {url} elsewhere and copy "
                f"it to {path}, or use --perceptual disc (the model's discriminator) or --perceptual none")
        import lpips

        self.net = lpips.LPIPS(net=net, pnet_rand=pnet_rand, verbose=False).eval().requires_grad_(False)
        self.max_size = max_size

    def _feats(self, x: torch.Tensor) -> list:
        x = _area_resize(x.float(), self.max_size)
        outs = self.net.net.forward(self.net.scaling_layer(x))
        return [o / (o.square().sum(1, keepdim=True).sqrt() + 1e-10) for o in outs]

    def prepare(self, target: torch.Tensor) -> list:
        with torch.no_grad():
            return self._feats(target)

    def __call__(self, img: torch.Tensor, target_feats: list) -> torch.Tensor:
        total = 0
        for k, (a, b) in enumerate(zip(self._feats(img), target_feats)):
            total = total + self.net.lins[k]((a - b).square()).mean(dim=(1, 2, 3))
        return total


class DiscFeatureLoss(torch.nn.Module):
    """Perceptual distance in a discriminator's features (see the module docstring).

    Args:
        D: a ``Discriminator`` whose resolution equals the images'.
        layers: indices into ``D.features(img)`` to use (default: all scales).
    """

    name = "disc"

    def __init__(self, D, layers: list | None = None):
        super().__init__()
        self.D = D.eval().requires_grad_(False)
        self.layers = layers

    def _feats(self, x: torch.Tensor) -> list:
        fs = self.D.features(x)
        if self.layers is not None:
            fs = [fs[i] for i in self.layers]
        return [f.float() / (f.float().square().sum(1, keepdim=True).sqrt() + 1e-8) for f in fs]

    def prepare(self, target: torch.Tensor) -> list:
        with torch.no_grad():
            return self._feats(target)

    def __call__(self, img: torch.Tensor, target_feats: list) -> torch.Tensor:
        fs = self._feats(img)
        return sum((a - b).square().sum(1).mean(dim=(1, 2)) for a, b in zip(fs, target_feats)) / len(fs)


def noise_regularization(noises, per_image: bool = True) -> torch.Tensor:
    """NVIDIA's noise regulariser: squared autocorrelation at shifts of one pixel, at every scale.

    For each map, while it is larger than 8x8: add the squared mean of ``n * roll(n, 1)``
    along x and along y, then 2x2 average-pool. Returns ``[B]`` (or a scalar summed over
    the batch when ``per_image`` is False).
    """
    total = 0
    for n in noises:
        n = n.float()
        while True:
            total = total + (n * torch.roll(n, 1, dims=3)).mean(dim=(1, 2, 3)).square()
            total = total + (n * torch.roll(n, 1, dims=2)).mean(dim=(1, 2, 3)).square()
            if n.shape[-1] <= 8:
                break
            n = F.avg_pool2d(n, 2)
    return total if per_image else total.sum()


@torch.no_grad()
def normalize_noise_(noises) -> None:
    """Re-normalise each map of each image to zero mean and unit variance, in place."""
    for n in noises:
        mean = n.mean(dim=(1, 2, 3), keepdim=True)
        std = n.square().mean(dim=(1, 2, 3), keepdim=True).sub(mean.square()).clamp_min(1e-12).sqrt()
        n.sub_(mean).div_(std)


def make_perceptual(kind, *, D=None, lpips_net: str = "vgg", pnet_rand: bool = False):
    """``none`` -> None; ``lpips`` -> :class:`LPIPSLoss`; ``disc`` -> :class:`DiscFeatureLoss`;
    ``auto`` -> LPIPS when its trunk is cached, else the discriminator when given, else None
    (with a warning: the inversion is then pixel-only). A loss object passes through."""
    if kind is None or kind == "none":
        return None
    if not isinstance(kind, str):
        return kind
    if kind == "auto":
        if lpips_trunk_path(lpips_net).is_file():
            return LPIPSLoss(lpips_net)
        if D is not None:
            log.info("perceptual 'auto': no LPIPS backbone at %s; using the model's discriminator features",
                     lpips_trunk_path(lpips_net))
            return DiscFeatureLoss(D)
        log.warning("perceptual 'auto': no LPIPS backbone at %s and the model has no discriminator, so the "
                    "inversion uses the pixel loss (MSE) alone; put the backbone there, or convert the model "
                    "with its discriminator, for a perceptual term", lpips_trunk_path(lpips_net))
        return None
    if kind == "lpips":
        return LPIPSLoss(lpips_net, pnet_rand=pnet_rand)
    if kind == "disc":
        if D is None:
            raise InversionError("--perceptual disc needs the model's discriminator, and this model ships none; "
                                 "use --perceptual lpips or none")
        return DiscFeatureLoss(D)
    raise InversionError(f"perceptual loss must be lpips, disc, auto or none, got {kind!r}")


__all__ = ["PixelMSE", "LPIPSLoss", "DiscFeatureLoss", "MissingWeightsError", "noise_regularization",
           "normalize_noise_", "make_perceptual", "lpips_trunk_path"]
