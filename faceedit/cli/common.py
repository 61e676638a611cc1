"""Helpers shared by the CLI commands (parsing, turning library errors into exit codes)."""
from __future__ import annotations

import contextlib
import os
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


class ProgramExit:
    """Ends the ``faceedit`` program without the exit-time teardown of its native libraries.

    Once Python's own exit work is done (non-daemon threads joined, every exit handler
    registered after :meth:`arm` run: worker pools and processes stopped, temporary files
    removed), a normal exit still runs the C++ static destructors of torch's libraries: about
    0.12 s on a 2-core CPU, spent freeing memory the operating system takes back anyway. :meth:`arm` registers
    :meth:`finish` as the first exit handler, so that it runs last; :meth:`record` keeps the
    exit status of the command. :meth:`finish` then shuts logging down, flushes Python's
    standard streams and ends the process with that status (``os._exit``). It does nothing
    (the normal exit goes on) where no status was recorded or the status is not an integer
    (a message), in a ``torchrun`` launch (``WORLD_SIZE`` set: the process group's own
    teardown is left to run), and where ``faceedit`` is not the program itself (its ``main``
    called from another program, e.g. a test: the other program's exit is its own). Exit handlers
    registered before :meth:`arm` (before ``main``: a coverage or tracing hook started with the
    interpreter) do not run.
    """

    def __init__(self):
        self.status = None

    def arm(self) -> None:
        import atexit

        atexit.register(self.finish)

    def record(self, code) -> None:
        """Keep the exit status (``SystemExit.code``: ``None`` means 0)."""
        self.status = 0 if code is None else code

    @staticmethod
    def is_program() -> bool:
        """Whether this process runs ``faceedit`` itself: ``sys.argv[0]`` is the console script
        (``faceedit``) or the package's ``__main__.py`` (``python -m faceedit``)."""
        import sys

        prog = sys.argv[0] if sys.argv else ""
        if os.path.splitext(os.path.basename(prog))[0] == "faceedit":
            return True
        package_main = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "__main__.py")
        return bool(prog) and os.path.abspath(prog) == package_main

    def finish(self) -> None:
        import logging
        import sys

        code = self.status
        if not isinstance(code, int) or isinstance(code, bool) or "WORLD_SIZE" in os.environ or not self.is_program():
            return
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed or broken stream: nothing more to write
                stream.flush()
        os._exit(code & 0xFF)


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


class OutDir(click.Path):
    """The type of every ``--out``: a folder that can be written, checked when the command line is
    read, before any work (``faceedit.core.files.check_writable_dir``: not a file, not under a
    file, not read-only; nothing is created). A bad one is a usage error (exit code 2)."""

    name = "folder"

    def __init__(self, **kw):
        kw.setdefault("file_okay", False)
        super().__init__(**kw)

    def convert(self, value, param, ctx):
        value = super().convert(value, param, ctx)
        from faceedit.core.errors import OutputError
        from faceedit.core.files import check_writable_dir

        try:
            check_writable_dir(value, what=param.opts[0] if param is not None and param.opts else "--out")
        except OutputError as e:
            self.fail(str(e), param, ctx)
        return value


def alignment_told_here() -> None:
    """The command tells skipped detections itself (``Pipeline(notice=)``): mute the alignment
    room's warnings of the same, so each is said once."""
    import logging

    logging.getLogger("faceedit.alignment.align").setLevel(logging.ERROR)


def max_pixels_option():
    """The ``--max-pixels`` option of every command that reads photos."""
    from faceedit.core.images import DEFAULT_MAX_PIXELS

    return click.option("--max-pixels", type=click.IntRange(1, None), default=DEFAULT_MAX_PIXELS, show_default=True,
                        help="Refuse photos with more pixels than this (decompression bombs); raise it for a "
                             "huge photo you trust.")


def min_score_option():
    """The ``--min-score`` option of every command that detects faces."""
    return click.option("--min-score", type=float, default=None,
                        help="Detections scoring below this are not faces: skipped and reported [default: dlib "
                             "skips a detection below 0.3 beside a face scoring more (a badge or print scores about "
                             "0.16, faces in photos 0.37 and up) and keeps a lone one, with a warning; mtcnn 0.95; "
                             "dlib-cnn every detection].")


def finish_batch(failures: list, total: int, noun: str = "input(s)") -> None:
    """The end of every batch command: list the inputs that failed on stderr, then exit 1 if any did.

    Every command that takes several inputs skips a bad one and goes on with the rest; the
    summary line (printed before this) counts what was done, and the exit code says whether
    everything was: 0 all done, 1 some (listed) or all failed.

    Args:
        failures: ``[(input, reason)]``.
        total: how many inputs were given.
        noun: what the inputs are called in the message.
    Raises:
        click.ClickException: one or more inputs failed (exit code 1); a single failure's
            reason is the message itself.
    """
    if not failures:
        return
    if len(failures) == 1:
        p, why = failures[0]
        why = why if str(p) in why else f"{p}: {why}"
        raise click.ClickException(why if total <= 1 else f"1 of {total} {noun} failed: {why}; the others are done")
    for p, why in failures:
        click.echo(f"failed: {p}: {why}", err=True)
    raise click.ClickException(f"{len(failures)} of {total} {noun} failed (listed above); the others are done")


def retry_failed_option():
    """The ``--retry-failed`` flag of the batch commands (``align``, ``invert``, ``edit``)."""
    return click.option("--retry-failed", is_flag=True,
                        help="Work again on the inputs a run into --out recorded as failed (skipped and listed "
                             "again without it).")


def loader_workers_option():
    """The ``--workers`` option of ``invert`` and ``edit``: the processes that read and align photos."""
    return click.option("--workers", type=click.IntRange(0, 256), default=None,
                        help="Processes (per process of a torchrun launch) that read and align photos while the "
                             "faces before are inverted; 0: in the process itself [default: the cores per process, "
                             "less one].")


def torchrun_launch(device):
    """The launch a folder command runs in: ``faceedit.batchrun.launched(device)`` under ``torchrun``
    (``WORLD_SIZE`` set), else this process alone, ``(None, device)``, without importing torch (so that a
    single photo's alignment can start first).

    Returns:
        A context manager of ``(DistContext or None, device)``.
    """
    if "WORLD_SIZE" not in os.environ:
        return contextlib.nullcontext((None, device))
    from faceedit.batchrun import launched

    return launched(device)
