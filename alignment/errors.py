"""Errors of the alignment room; each message names what was tried and what to try next."""
from __future__ import annotations

from faceedit.core.errors import AlignmentError

__all__ = ["AlignmentError", "FaceNotFoundError", "FaceTooSmallError", "ModelFileError"]


class FaceNotFoundError(AlignmentError):
    """No face (or no face of the requested kind) was found in a photo."""


class FaceTooSmallError(FaceNotFoundError):
    """Faces were found, but every one is below the minimum face size."""


class ModelFileError(AlignmentError):
    """A detector or landmark model file (or the package that ships it) is missing."""
