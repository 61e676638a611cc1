"""The ``faceedit`` command line: a click group whose commands are thin wrappers.

Each command lives in its own module of this package and is registered below.
Exit codes: 0 success, 1 a failed job or batch input (``click.ClickException``), 2 a usage error.
Ctrl-C and SIGTERM stop a command cleanly (``Aborted!``, exit code 1): finished outputs
stay complete, temporary files are removed, and folder runs (``align``, ``invert``)
resume where they stopped when run again.
"""
from __future__ import annotations

import importlib
import logging
import os

import click

from faceedit._version import __version__

# (module, command attribute) in help order; every module here is part of the package.
_COMMANDS = [
    ("faceedit.cli.models", "models"),
    ("faceedit.cli.models", "download"),
    ("faceedit.cli.models", "convert"),
    ("faceedit.cli.models", "fit_prior_cmd"),
    ("faceedit.cli.generate", "generate"),
    ("faceedit.cli.generate", "mix"),
    # Each line below is enabled by the change that adds its module:
    ("faceedit.cli.align", "align"),
    ("faceedit.cli.score", "score"),
    ("faceedit.cli.bench", "bench"),
    ("faceedit.cli.train", "dataset"),
    ("faceedit.cli.train", "train"),
    ("faceedit.cli.train", "unpack_export"),
    ("faceedit.cli.train", "train_scorers"),
    ("faceedit.cli.train", "train_quadnet_cmd"),
    ("faceedit.cli.invert", "invert"),
    ("faceedit.cli.edit", "edit"),
    ("faceedit.cli.edit", "directions"),
    ("faceedit.cli.encoder", "train_encoder"),
    ("faceedit.cli.adopt", "adopt"),
    ("faceedit.cli.ui", "ui"),
]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="faceedit")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where to run the networks.")
@click.pass_context
def cli(ctx, verbose, quiet, device):
    """faceedit: invert real photos into StyleGAN latent spaces (W, W+, W++) and edit them.

    \b
    Examples:
      faceedit edit photo.jpg --attr smile --strength 2 --out out/
      faceedit invert photo.jpg --space wpp
      faceedit models

    \b
    Exit codes: 0 done; 1 the job failed (the message names the fix), some inputs
    of a batch failed (listed; the others are done), or it was interrupted (Ctrl-C,
    SIGTERM: finished outputs are kept, a re-run resumes); 2 a usage error.
    """
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # main() set it before torch loaded (faceedit.core.threads), when logging was not configured yet
    threads = os.environ.get("OMP_NUM_THREADS", "torch's default")
    logging.getLogger("faceedit.core.threads").info("CPU threads: %s", threads)
    ctx.ensure_object(dict)
    ctx.obj["device"] = device
    ctx.obj["quiet"] = quiet


def _register():
    for mod, attr in _COMMANDS:
        cli.add_command(getattr(importlib.import_module(mod), attr))


_register()


def main():
    import atexit
    import gc

    from .common import ProgramExit, handle_termination

    ending = ProgramExit()
    ending.arm()  # first registered, so it runs after every other exit handler
    # The interpreter's last garbage collection walks every object torch made (about 0.2 s of CPU on a
    # 2-core machine) only to free memory the operating system reclaims anyway; frozen objects are skipped.
    atexit.register(gc.freeze)
    handle_termination()
    from faceedit.core.threads import configure_cpu_threads

    configure_cpu_threads()  # before torch loads: as many threads as idle cores
    try:
        cli(prog_name="faceedit")
    except SystemExit as e:
        ending.record(e.code)
        raise
