"""faceedit.core.threads: torch's CPU thread count from the idle cores, set before torch loads."""
import os
import subprocess
import sys

import pytest

from faceedit.core.threads import available_cores, configure_cpu_threads, cpu_threads


@pytest.mark.parametrize("cores, load, want", [(2, 0.0, 2), (2, 0.5, 2), (2, 0.6, 1), (2, 3.4, 1), (1, 0.0, 1),
                                               (16, 3.2, 13), (16, 40.0, 1), (4, -1.0, 4)])
def test_threads_are_the_idle_cores(cores, load, want):
    assert cpu_threads(cores=cores, load=load) == want


def test_threads_default_to_this_process_and_its_load():
    n = cpu_threads()
    assert 1 <= n <= available_cores() <= (os.cpu_count() or 1)


def test_configure_keeps_the_users_choice_and_fills_in_the_rest():
    env = {}
    n = configure_cpu_threads(env)
    assert env == {"OMP_NUM_THREADS": str(n)} and 1 <= n <= available_cores()
    env = {"OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "ACTIVE"}
    assert configure_cpu_threads(env) == 3 and env == {"OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "ACTIVE"}
    env = {"OMP_NUM_THREADS": "lots"}  # not a count: replaced by one
    assert configure_cpu_threads(env) == int(env["OMP_NUM_THREADS"]) >= 1


def test_the_cli_sets_them_before_torch_loads():
    # read as the command ends (an exit handler registered before main would not run: the program
    # ends right after the handlers registered since, faceedit.cli.common.ProgramExit)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    code = ("import os, sys\n"
            "sys.argv = ['faceedit', '--version']\n"
            "from faceedit.cli import main\n"
            "try:\n"
            "    main()\n"
            "except SystemExit:\n"
            "    print(os.environ.get('OMP_NUM_THREADS'), os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)\n"
            "    raise\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    threads, policy, torch_loaded = out.stdout.strip().splitlines()[-1].split()
    assert 1 <= int(threads) <= available_cores() and policy == "None" and torch_loaded == "False"


def test_the_cli_says_its_threads_with_verbose():
    """``-v`` names the count in force (chosen before logging was set up, so said once it is)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    run = [sys.executable, "-m", "faceedit", "-v", "models"]
    chosen = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120)
    given = subprocess.run(run, env={**env, "OMP_NUM_THREADS": "3"}, capture_output=True, text=True, timeout=120)
    assert chosen.returncode == 0 and given.returncode == 0, (chosen.stderr, given.stderr)
    n = int(chosen.stderr.split("CPU threads: ")[1].split()[0])
    assert 1 <= n <= available_cores() and "CPU threads: 3" in given.stderr
