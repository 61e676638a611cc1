"""The exceptions a user can cause: :class:`FaceeditError` and one subclass per room.

The CLI reports a :class:`FaceeditError` as one line naming the fix and exit code 1;
anything else is a bug and keeps its traceback. Each room error is also a ``ValueError``
(the exception these replaced), so code written against ``ValueError`` keeps working.
Rooms define their finer errors (``FaceNotFoundError``, ``LatentFileError``, ...) as
subclasses of their room's class.
"""
from __future__ import annotations


class FaceeditError(Exception):
    """Base of every error a user can cause (a bad input, a missing file, a wrong option)."""


class DeviceError(FaceeditError, ValueError):
    """A device that cannot be used (``cuda`` without a GPU, an unknown name)."""


class ImageLoadError(FaceeditError, ValueError):
    """A file that cannot be read as a photo."""


class TensorFileError(FaceeditError, ValueError):
    """A tensor file (safetensors with JSON metadata) that cannot be used."""


class NetworkError(FaceeditError, ValueError):
    """A network built or called with arguments it cannot serve (``faceedit.networks``)."""


class CheckpointError(FaceeditError, ValueError):
    """A checkpoint that cannot be read safely or does not describe a usable model."""


class AlignmentError(FaceeditError, ValueError):
    """A photo or a request that alignment cannot serve."""


class MetricsError(FaceeditError, ValueError):
    """A measurement that cannot be made with what was given (``faceedit.metrics``)."""


class InversionError(FaceeditError, ValueError):
    """An inversion that cannot be run as asked (``faceedit.inversion``)."""


class EditingError(FaceeditError, ValueError):
    """An edit or a direction fit that cannot be run as asked (``faceedit.editing``)."""


class TrainingError(FaceeditError, ValueError):
    """A data set or training run that cannot go on as asked (``faceedit.training``)."""


class PipelineError(FaceeditError, ValueError):
    """A request the front door (``faceedit.pipeline``, the CLI) cannot serve."""


class OutputError(FaceeditError, OSError):
    """An output folder or file that cannot be written (read-only, under a file, someone else's file)."""
