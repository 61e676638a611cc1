"""Helpers shared by the CLI commands (parsing, turning library errors into exit codes)."""
from __future__ import annotations

import contextlib
import re
import signal

import click


def parse_range(text: str, *, name: str = "seeds") -> list:
    """``0-7`` / ``1,5,9`` / ``0-3,10`` -> list of ints."""
    out = []
    for part in str(text).split(","):
        part = part.strip()
        m = re.fullmatch(r"(-?\d+)(?:-(-?\d+))?", part)
        if not m:
            raise click.BadParameter(f"{part!r} is not a number or a range like 0-7", param_hint=f"--{name}")
        a, b = int(m.group(1)), int(m.group(2) if m.group(2) is not None else m.group(1))
        if b < a:
            raise click.BadParameter(f"range {part!r} runs backwards", param_hint=f"--{name}")
        if b - a > 100_000:
            raise click.BadParameter(f"range {part!r} is too long (100000 at most)", param_hint=f"--{name}")
        out.extend(range(a, b + 1))
    return out


def cache_default(*parts: str):
    """A click default for a path under the faceedit cache (``<cache>/PART/...``).

    The path is resolved when the command runs (``$FACEEDIT_HOME``, else
    ``$XDG_CACHE_HOME/faceedit``, else ``~/.cache/faceedit``), so it is absolute and never
    relative to the current directory.

    Args:
        *parts: Path components below the cache folder (empty ones are skipped).

    Returns:
        A callable click calls for the default; it returns the absolute path as a string.
    """
    def default() -> str:
        from faceedit.checkpoints.registry import cache_dir

        return str(cache_dir().joinpath(*[p for p in parts if p]))

    return default


def data_default(name: str = ""):
    """A click default for a data pack or folder under the faceedit cache (``<cache>/data/NAME``)."""
    return cache_default("data", name)


def results_default(area: str):
    """A click default for a benchmark's results folder (``<cache>/bench/AREA``)."""
    return cache_default("bench", area)


#: How :func:`data_default` defaults are shown in ``--help``.
DATA_HELP = "<faceedit cache>/data"
#: How :func:`results_default` defaults are shown in ``--help``.
RESULTS_HELP = "<faceedit cache>/bench"


@contextlib.contextmanager
def job_errors():
    """Report expected library errors as one line and exit code 1 (never a traceback)."""
    from faceedit.errors import USER_ERRORS

    try:
        yield
    except USER_ERRORS as e:
        raise click.ClickException(f"{type(e).__name__}: {e}") from e


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def handle_termination() -> None:
    """Make SIGTERM behave like Ctrl-C in the main process.

    The default SIGTERM action kills the process on the spot; turned into
    ``KeyboardInterrupt`` it unwinds instead, so atomic writes delete their temporary
    files, worker pools are shut down and click reports ``Aborted!`` (exit code 1).
    Finished outputs stay; a re-run resumes. Called once by ``faceedit.cli.main``.
    """
    with contextlib.suppress(ValueError, OSError):  # not the main thread / no such signal
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)


def worker_init() -> None:
    """Initializer for worker processes: ignore Ctrl-C (the parent handles it and stops
    the pool), so an interrupt prints no traceback per worker."""
    with contextlib.suppress(ValueError, OSError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)


#: Face detectors every command that aligns photos offers.
DETECTORS = ("dlib", "dlib-cnn", "mtcnn")


def detector_option():
    """The ``--detector`` option shared by the commands that align photos."""
    return click.option("--detector", type=click.Choice(DETECTORS), default="dlib", show_default=True,
                        help="Face detector: dlib (HOG, fast on the CPU), dlib-cnn (finds more turned and small "
                             "faces; slower), mtcnn (5 landmarks; needs facenet-pytorch).")


def perceptual_option(help: str, *, default: str = "auto", only: tuple | None = None):
    """The ``--perceptual`` option: the perceptual loss by the names of
    ``faceedit.inversion.options.Perceptual`` (``only``: the subset a command supports)."""
    from faceedit.inversion.options import Perceptual

    names = [p.value for p in Perceptual if only is None or p.value in only]
    return click.option("--perceptual", type=click.Choice(names), default=default, show_default=True, help=help)


def seed_option(what: str = "Random seed", default: int | None = 0):
    """The ``--seed`` option (an int, shown default)."""
    return click.option("--seed", type=int, default=default, show_default=True, help=f"{what}.")
