"""How many threads torch's CPU operators should use: the cores this process may run on that are idle.

torch starts one intra-op thread per core. On an idle machine that is fastest; on a shared one
the threads of a parallel region wait for each other, and a thread whose core is taken by
another process holds up the rest (OpenMP threads spin while they wait), so a run can take
several times longer than with one thread. :func:`cpu_threads` counts the cores of the
process's CPU affinity less the load average (the processes already running), rounded, and
at least one; :func:`configure_cpu_threads` applies that, unless the user chose a number
through ``OMP_NUM_THREADS``. OpenMP's wait policy is left as it is: sleeping waits
(``OMP_WAIT_POLICY=PASSIVE``) made two threads on an idle 2-core machine slower than one (the
small operators of a 64 px generator wake the threads thousands of times a step). No torch
import here: the CLI calls it before torch is loaded (OpenMP reads the variable when torch loads).
"""
from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def cpu_threads(*, cores: int | None = None, load: float | None = None) -> int:
    """Threads for torch's CPU operators: the idle cores, ``round(cores - load)``, between 1 and ``cores``.

    Args:
        cores: cores to count (default: :func:`available_cores`).
        load: processes running or waiting for a core (default: the one-minute load average;
            0 where the platform has none).
    Returns:
        The thread count (on two cores: 2 while the load average is at most 0.5, else 1).
    """
    cores = available_cores() if cores is None else max(1, int(cores))
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # no load average on this platform
            load = 0.0
    return max(1, min(cores, int(cores - float(load) + 0.5)))


def configure_cpu_threads(environ=None) -> int:
    """Use :func:`cpu_threads` threads for torch's CPU operators, unless ``OMP_NUM_THREADS`` is set.

    Sets ``OMP_NUM_THREADS`` where it is unset (OpenMP reads it when torch loads) and, if torch
    is already loaded, calls ``torch.set_num_threads``. A number the user put there is kept.

    Args:
        environ: the environment to read and change (default: ``os.environ``).
    Returns:
        The thread count in force.
    """
    env = os.environ if environ is None else environ
    given = env.get("OMP_NUM_THREADS", "").strip()
    if given.isdigit() and int(given) > 0:
        return int(given)
    n = cpu_threads()
    env["OMP_NUM_THREADS"] = str(n)
    if environ is None and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    log.debug("using %d CPU thread(s) of %d core(s)", n, available_cores())
    return n


__all__ = ["available_cores", "cpu_threads", "configure_cpu_threads"]
