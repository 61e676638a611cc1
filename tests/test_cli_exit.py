"""How the ``faceedit`` program ends (``faceedit.cli.common.ProgramExit``): with the command's exit
status and every output written, after the exit handlers, without the native libraries' teardown."""
import os
import subprocess
import sys

import pytest

from faceedit.cli import common
from faceedit.cli.common import ProgramExit


@pytest.fixture
def ended(monkeypatch):
    """``os._exit`` and ``logging.shutdown`` recorded instead of run."""
    calls = []
    monkeypatch.setattr(common.os, "_exit", lambda code: calls.append(("exit", code)))
    import logging

    monkeypatch.setattr(logging, "shutdown", lambda: calls.append(("logging",)))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    return calls


@pytest.mark.parametrize("code, status", [(None, 0), (0, 0), (1, 1), (2, 2), (256 + 3, 3)])
def test_the_program_ends_with_its_status_after_logging(ended, monkeypatch, code, status):
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/faceedit", "edit"])
    e = ProgramExit()
    e.record(code)
    e.finish()
    assert ended == [("logging",), ("exit", status)]


@pytest.mark.parametrize("case", ["nothing recorded", "a message", "torchrun", "another program"])
def test_the_normal_exit_goes_on_where_it_must(ended, monkeypatch, case):
    monkeypatch.setattr(sys, "argv", ["faceedit", "edit"])
    e = ProgramExit()
    if case != "nothing recorded":
        e.record("Error: a message" if case == "a message" else 0)
    if case == "torchrun":
        monkeypatch.setenv("WORLD_SIZE", "2")
    if case == "another program":
        monkeypatch.setattr(sys, "argv", ["/usr/bin/pytest", "-q"])
    e.finish()
    assert ended == []


def test_is_program_knows_the_console_script_and_python_m(monkeypatch):
    main_py = os.path.join(os.path.dirname(common.__file__), os.pardir, "__main__.py")
    for argv0, want in (("faceedit", True), ("/venv/bin/faceedit", True), ("/venv/Scripts/faceedit.exe", True),
                        (os.path.abspath(main_py), True), ("/venv/bin/pytest", False), ("-c", False), ("", False)):
        monkeypatch.setattr(sys, "argv", [argv0] if argv0 else [])
        assert ProgramExit.is_program() is want, argv0


def _faceedit(*args, extra=""):
    """``python -m faceedit ARGS`` with ``extra`` run first (inside the program, before its main)."""
    code = f"import runpy, sys\n{extra}\nsys.argv = ['faceedit', *sys.argv[1:]]\nrunpy.run_module('faceedit', " \
           f"run_name='__main__', alter_sys=True)\n"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=60)


def test_the_program_keeps_its_exit_codes_and_output_and_runs_later_exit_handlers(tmp_path):
    """Through a pipe: the version line and a usage error's message come out whole, with exit codes 0
    and 2; an exit handler registered while the command runs (as torch's and multiprocessing's are)
    still runs, and the process ends right after the handlers (one registered before ``main``, which
    runs after :meth:`ProgramExit.finish` in a normal exit, does not run)."""
    ok = _faceedit("--version")
    assert ok.returncode == 0 and ok.stdout.startswith("faceedit, version ") and ok.stdout.endswith("\n")
    usage = _faceedit("edit")
    assert usage.returncode == 2 and "--attr" in usage.stderr
    during, before = tmp_path / "during", tmp_path / "before"
    hook = f"""
import atexit, click
atexit.register(lambda: open({str(before)!r}, "w").write("ran"))
leave = click.Context.exit
def exit_after_registering(self, code=0):
    atexit.register(lambda: open({str(during)!r}, "w").write("ran"))
    leave(self, code)
click.Context.exit = exit_after_registering
"""
    ran = _faceedit("--version", extra=hook)
    assert ran.returncode == 0 and ran.stdout == ok.stdout
    assert during.read_text() == "ran" and not before.exists()
