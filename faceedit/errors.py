"""The exception types a user can cause, gathered for the CLI (each names its fix)."""
from __future__ import annotations


def _collect():
    from faceedit.checkpoints.native import CheckpointError
    from faceedit.inversion.latent import LatentFileError

    found = [CheckpointError, LatentFileError, FileExistsError, FileNotFoundError, ValueError, RuntimeError]
    for mod, name in [("faceedit.imageio", "ImageLoadError"), ("faceedit.alignment.errors", "AlignmentError"),
                      ("faceedit.editing.direction", "DirectionFileError")]:
        try:
            import importlib

            found.append(getattr(importlib.import_module(mod), name))
        except (ImportError, AttributeError):
            pass
    return tuple(found)


USER_ERRORS = _collect()
