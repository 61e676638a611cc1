"""Device selection, resolved once per call (never a hard-coded ``cuda``)."""
from __future__ import annotations

import torch

from .errors import DeviceError


def resolve_device(choice: str | torch.device | None = "auto") -> torch.device:
    """The device a job runs on.

    Args:
        choice: ``auto`` (or ``None``): CUDA when a GPU is visible, else the CPU; ``cpu``;
            ``cuda`` / ``cuda:N``; or a ``torch.device``, returned as it is.
    Returns:
        The ``torch.device``.
    Raises:
        DeviceError: ``cuda`` without a visible GPU, or an unknown name.
    """
    if isinstance(choice, torch.device):
        return choice
    choice = (choice or "auto").lower()
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
        return torch.device(choice)
    if choice == "cpu":
        return torch.device("cpu")
    raise DeviceError(f"device must be auto, cpu or cuda, got {choice!r}")
