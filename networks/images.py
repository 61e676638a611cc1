"""Conversions between generator tensors and uint8 images (torch and numpy only).

They live here, in the lowest room, so that every room above (inversion, editing,
training, the front door's ``faceedit.imageio``) shares one definition.
"""
from __future__ import annotations

import numpy as np


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
    t = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return t.to(device) if device is not None else t
