"""core.distributed: the launch read from torchrun's environment, and the rank shards."""
import pytest

from faceedit.core.distributed import DistContext, context, shard_indices
from faceedit.core.errors import DeviceError


def test_no_torchrun_is_a_world_of_one(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = context("cpu")
    assert (ctx.rank, ctx.world_size, ctx.backend, ctx.is_main, ctx.distributed) == (0, 1, None, True, False)


@pytest.mark.parametrize("rank,world", [("2", "2"), ("-1", "2"), ("x", "2"), ("0", "0")])
def test_inconsistent_environment_is_refused(monkeypatch, rank, world):
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", world)
    with pytest.raises(DeviceError, match="torchrun"):
        context("cpu")


@pytest.mark.parametrize("n,world", [(0, 3), (1, 3), (10, 1), (10, 3), (17, 4)])
def test_shards_cover_every_input_once(n, world):
    seen = [i for r in range(world) for i in shard_indices(n, DistContext(rank=r, world_size=world))]
    assert sorted(seen) == list(range(n))
