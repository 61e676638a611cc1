"""The exceptions a user can cause, gathered for the CLI (each names its fix).

Every room's errors derive from :class:`faceedit.core.errors.FaceeditError`; the rest are
the few standard exceptions a user's input raises directly (a missing input file, an
output that would overwrite an input). Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

from faceedit.core.errors import FaceeditError

USER_ERRORS = (FaceeditError, FileExistsError, FileNotFoundError)
