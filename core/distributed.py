"""The process group of a ``torchrun`` launch, read once from the environment.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` for every process it starts; a plain
``python`` or ``faceedit`` run has none of them and is a world of one, with no process group. The
same code paths therefore run with and without ``torchrun``: they ask :func:`context` who they are
and shard by :func:`shard_indices`, which does not depend on how the world was launched.
"""
from __future__ import annotations

import contextlib
import os
import pickle
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch

from .errors import DeviceError


@dataclass(frozen=True)
class DistContext:
    """Who this process is in its launch.

    Attributes:
        rank: the global rank, 0 for a single process.
        world_size: how many processes the launch has, 1 for a single process.
        local_rank: the rank on this node, which picks its GPU.
        backend: ``nccl`` / ``gloo`` once a process group is up, ``None`` for a single process.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Whether this process prints progress and writes the files written once per run."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether a process group is up (more than one process)."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise DeviceError(f"{name}={value!r} is not an integer; launch with torchrun, which sets it") from None


def context(device: torch.device | str = "cpu") -> DistContext:
    """The launch this process belongs to, starting its process group on first use.

    Args:
        device: where the job runs: ``cuda`` picks NCCL and pins this process to
            ``cuda:LOCAL_RANK``; anything else picks gloo.
    Returns:
        The :class:`DistContext`; a world of one when ``WORLD_SIZE`` is unset or 1.
    Raises:
        DeviceError: ``RANK``/``WORLD_SIZE`` are inconsistent, or CUDA ranks outnumber the GPUs.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise DeviceError(f"RANK={rank} does not fit WORLD_SIZE={world}; launch with torchrun")
    if world == 1:
        return DistContext()
    cuda = torch.device(device).type == "cuda"
    if cuda:
        if local >= torch.cuda.device_count():
            raise DeviceError(f"LOCAL_RANK={local} but this node has {torch.cuda.device_count()} GPU(s); "
                              f"use torchrun --nproc_per_node {torch.cuda.device_count()} or fewer")
        torch.cuda.set_device(local)
    backend = "nccl" if cuda else "gloo"
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=backend)
    return DistContext(rank=rank, world_size=world, local_rank=local, backend=torch.distributed.get_backend())


def rank_device(ctx: DistContext, device: torch.device) -> torch.device:
    """This rank's device: its own GPU under torchrun with CUDA, the given device otherwise."""
    if ctx.distributed and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


def shard_indices(n: int, ctx: DistContext) -> range:
    """The inputs of ``n`` (in their sorted order) that this rank handles: every ``world_size``-th.

    Args:
        n: how many inputs the whole run has.
        ctx: this process's launch.
    Returns:
        The indices ``rank, rank + world_size, ...`` below ``n``; all of them for a world of one.
    """
    return range(ctx.rank, n, ctx.world_size)


def group_shards(n: int, size: int, ctx: DistContext) -> list:
    """This rank's groups of ``size`` consecutive inputs, the groups dealt to the ranks in turn.

    The groups are fixed by ``n`` and ``size`` alone (group ``g`` holds ``g * size, ...,
    g * size + size - 1``), so each is the same set of inputs whatever the number of ranks,
    and a job that treats a group as one unit (one inversion batch) gives the same results
    with 1 or N processes. Group ``g`` goes to rank ``g % world_size``.

    Args:
        n: how many inputs the whole run has.
        size: inputs per group (>= 1).
        ctx: this process's launch.
    Returns:
        A list of ``range`` objects, this rank's groups in order.
    """
    size = max(1, int(size))
    return [range(g * size, min(n, (g + 1) * size)) for g in shard_indices(-(-n // size), ctx)]


def local_world_size() -> int:
    """How many processes of the launch run on this node (``LOCAL_WORLD_SIZE``, 1 without torchrun)."""
    return max(1, _env_int("LOCAL_WORLD_SIZE", 1))


def decided_by_main(ctx: DistContext, decide):
    """``decide()`` run on rank 0 alone, its result (or its exception) given to every rank.

    For what must be one decision for the whole launch (a plan that reads a shared folder
    before any rank writes into it). A world of one just calls ``decide()``.

    Args:
        ctx: this process's launch.
        decide: a callable of no arguments whose result pickles.
    Returns:
        ``decide()``'s result, on every rank.
    Raises:
        Whatever ``decide()`` raised on rank 0, raised on every rank (an exception that does not
        pickle arrives as ``RuntimeError`` with its message).
    """
    if not ctx.distributed:
        return decide()
    box: list = [None]
    raised: Exception | None = None
    if ctx.is_main:
        try:
            box[0] = (True, decide())
        except Exception as e:  # noqa: BLE001 - handed to every rank, raised there and here
            raised = e
            try:
                pickle.dumps(e)
                box[0] = (False, e)
            except Exception:  # noqa: BLE001 - an exception that does not pickle travels as its message
                box[0] = (False, RuntimeError(f"rank 0: {type(e).__name__}: {e}"))
    torch.distributed.broadcast_object_list(box, src=0)
    ok, value = box[0]
    if not ok:
        raise (raised if raised is not None else value)
    return value


def gathered(ctx: DistContext, obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` for a world of one)."""
    if not ctx.distributed:
        return [obj]
    out: list = [None] * ctx.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op for a single process)."""
    if ctx.distributed:
        torch.distributed.barrier()


@contextlib.contextmanager
def launch(device: torch.device | str = "cpu") -> Iterator[DistContext]:
    """:func:`context` for the length of one job: a process group it starts ends with the job (one
    that was already up, e.g. a caller's, is left up)."""
    started = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    ctx = context(device)
    try:
        yield ctx
    finally:
        if started:
            shutdown(ctx)


def shutdown(ctx: DistContext) -> None:
    """End the process group this module started (no-op for a single process)."""
    _CONTROL.clear()
    if ctx.distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


# ----------------------------------------------------------------------------- collectives for training

_CONTROL: dict = {}  # the gloo group of host-side agreements, made on first use


def _control_group():
    """A gloo group for small host-side values (``None``: the default group, when that is gloo).

    Under NCCL a Python number agreed through the default group would travel as a CUDA tensor
    and wait for the GPU's queue; through gloo it stays on the host and the GPUs run on.
    """
    if torch.distributed.get_backend() == "gloo":
        return None
    if "group" not in _CONTROL:  # every rank reaches its first agreement at the same point
        _CONTROL["group"] = torch.distributed.new_group(backend="gloo")
    return _CONTROL["group"]


def _flat_groups(tensors: Iterable[torch.Tensor]) -> list:
    """``tensors`` grouped by (device, dtype), so that each group travels as one flat buffer."""
    groups: dict = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    return list(groups.values())


def all_mean_(ctx: DistContext, tensors: Iterable[torch.Tensor]) -> None:
    """Replace every tensor by its mean over the ranks, in place (one all-reduce per dtype).

    Args:
        ctx: this process's launch (a world of one leaves the tensors as they are).
        tensors: floating-point tensors of the same shapes on every rank.
    """
    if not ctx.distributed:
        return
    for group in _flat_groups(tensors):
        flat = torch.cat([t.reshape(-1) for t in group])
        torch.distributed.all_reduce(flat)  # SUM: gloo has no AVG
        flat /= ctx.world_size
        for t, part in zip(group, flat.split([t.numel() for t in group])):
            t.copy_(part.view_as(t))


def average_gradients(ctx: DistContext, params: Iterable[torch.nn.Parameter]) -> None:
    """Average the gradients of ``params`` over the ranks before an optimiser step (data parallel).

    ``torch.nn.parallel.DistributedDataParallel`` is not used: its reducer hooks the backward of
    the forward it wrapped and does not support ``torch.autograd.grad`` with ``create_graph``
    (double backward), which the R1 and path-length regularisers need, nor a module trained in
    several phases with different losses per step. NVIDIA's StyleGAN2-ADA and StyleGAN3 training
    loops meet the same limits by all-reducing one flat copy of a phase's gradients; this does the
    same. A parameter without a gradient keeps none (the optimiser skips it on every rank alike:
    the ranks run the same graph, so the same parameters have gradients).

    Args:
        ctx: this process's launch (no-op for a world of one).
        params: the parameters of the phase's module.
    """
    if ctx.distributed:
        all_mean_(ctx, [p.grad for p in params if p.grad is not None])


def broadcast_(ctx: DistContext, tensors: Iterable[torch.Tensor]) -> None:
    """Overwrite every tensor with rank 0's, in place (no-op for a world of one)."""
    if not ctx.distributed:
        return
    for group in _flat_groups(tensors):
        flat = torch.cat([t.reshape(-1) for t in group])
        torch.distributed.broadcast(flat, src=0)
        for t, part in zip(group, flat.split([t.numel() for t in group])):
            t.copy_(part.view_as(t))


def main_value(ctx: DistContext, value: float) -> float:
    """Rank 0's ``value`` on every rank: a decision that depends on a clock (a time budget, a
    learning rate scheduled in wall time) taken once, so that the ranks never part ways.

    Args:
        ctx: this process's launch.
        value: a number (a bool travels as 0/1).
    Returns:
        Rank 0's value, as a float (``value`` itself for a world of one).
    """
    if not ctx.distributed:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64)
    torch.distributed.broadcast(t, src=0, group=_control_group())
    return float(t)


def check_same(ctx: DistContext, value, what: str) -> None:
    """Raise unless every rank holds the same ``value`` (a picklable fact, e.g. where a run resumes from).

    Args:
        ctx: this process's launch (a world of one always agrees).
        value: this rank's fact.
        what: what the value is, for the message.
    Raises:
        DeviceError: the ranks disagree (it names each rank's value and the usual cause).
    """
    if not ctx.distributed:
        return
    seen: list = [None] * ctx.world_size
    torch.distributed.all_gather_object(seen, value, group=_control_group())
    if any(v != seen[0] for v in seen):
        raise DeviceError(f"the ranks disagree on {what}: {seen}; every rank must see the same files (put the "
                          f"run folder on storage that every node mounts)")
