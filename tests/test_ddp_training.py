"""Data-parallel training on the CPU (gloo): 2 ranks train as 1 process on the same global batch.

One pair of processes (``torch.multiprocessing`` spawn, a ``FileStore`` rendezvous in the test's
temporary folder: no port to collide on) runs every distributed case once; the tests below check
what they left against single-process runs made here.

Tolerance: parameters (and Adam's moments) within ``ATOL = 1e-4`` of the single process
(measured here: at most 1.2e-6 for the GAN, 5e-7 for the encoder). The two runs do the same
arithmetic except the order of the sums over the batch (one sum of 8 per-sample terms against two
sums of 4 added by the all-reduce) and a few batch-size dependent kernels, so they differ by float32
rounding, amplified a little by Adam's normalisation. One Adam step moves a parameter by about
``lr = 2e-3``; ``ATOL`` is 5% of that, so a gradient that was not averaged, a rank that drew another
share of the batch, or a statistic (``w_avg``, the path-length mean) left rank-local moves
parameters by whole steps and fails (each test also checks that its steps moved the weights by more
than ``20 * ATOL``); the ranks themselves must hold bit-identical parameters.

The GAN cases use the MLP mapping: the W++ transformer's key biases have a gradient that is zero in
exact arithmetic (softmax ignores a shift shared by all keys), so Adam turns their rounding noise
into updates of up to a few percent of a step, and 2 ranks matched 1 process there to 4.5e-5 only.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch

from test_training import TINY, _images, _tiny_pack

ATOL = 1e-4  # see the module docstring
WORLD = 2
STEPS = 2  # r1_every = pl_every = 2: step 0 runs both regularisers, step 1 neither
JOB = {**{k: v for k, v in TINY.items() if k != "resolution"}, "resolution": 16, "gsnr_every": 2,
       "gsnr_samples": 4}
FAST = {**TINY, "fast": True}
ENC = dict(space="w+", steps=3, batch=4, val=4, minutes=60.0, log_every=1)


def _files(root: Path) -> dict:
    return {"pack": root / "train.npz", "model": root / "tiny", "store": root / "store", "watched": root / "w",
            "results": root / "results"}


def _make_inputs(root: Path) -> dict:
    from faceedit.checkpoints import save_native
    from faceedit.networks import Discriminator
    from test_encoder import tiny_generator

    f = _files(root)
    _tiny_pack(f["pack"], n=16, side=32)
    G = tiny_generator(16)
    torch.manual_seed(3)
    save_native(f["model"], G, name="tiny", D=Discriminator(16, channel_base=128, channel_max=16))
    f["results"].mkdir()
    return f


def _audit_writes(root: Path, log: list) -> None:
    """Record every path under ``root`` that this process opens for writing, creates, renames or removes."""
    root = str(root)
    flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def hook(event, args):
        if event == "open":
            path, mode, flag = args
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flag, int) and flag & flags)
            if writes and str(path).startswith(root):
                log.append(str(path))
        elif event == "os.rename" and (str(args[0]).startswith(root) or str(args[1]).startswith(root)):
            log.append(str(args[1]))
        elif event in ("os.mkdir", "os.remove") and str(args[0]).startswith(root):
            log.append(str(args[0]))

    sys.addaudithook(hook)


def _worker(rank: int, root: str) -> None:
    """One rank: the GAN job, a fast-step trainer, the encoder job; results into ``root/results``."""
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    f = _files(Path(root))
    dist.init_process_group("gloo", store=dist.FileStore(str(f["store"]), WORLD), rank=rank, world_size=WORLD)
    from faceedit.core.distributed import check_same, context
    from faceedit.core.errors import DeviceError
    from faceedit.training import encoder, job
    from faceedit.training.loop import TrainConfig, Trainer

    writes: list = []
    _audit_writes(f["watched"], writes)
    w = f["watched"]
    s = job.run_job(data=f["pack"], mapping="mlp", run_dir=w / "run", minutes=5, export=w / "export", device="cpu",
                    max_steps=STEPS, overrides=JOB)
    tr = Trainer(TrainConfig(**FAST), _images(), "cpu", run_dir=w / "fast", dist=context("cpu"))
    tr.train(max_steps=STEPS)
    e = encoder.run(str(f["model"]), f["pack"], out=w / "enc", device="cpu",
                    encoder_kwargs=encoder.encoder_width(8), **ENC)
    try:  # what a rank that sees other files than rank 0 meets
        check_same(context("cpu"), f"run folder {rank}", "where the run continues from")
        disagree = None
    except DeviceError as err:
        disagree = str(err)
    torch.save({"job": s, "fast": tr.state_tensors(), "encoder": e, "writes": writes, "disagree": disagree},
               f["results"] / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Run :func:`_worker` on 2 spawned ranks (at most 120 s); their results, one dict per rank."""
    import torch.multiprocessing as mp

    root = tmp_path_factory.mktemp("ddp")
    f = _make_inputs(root)
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # the children's thread count (they inherit the environment)
    try:
        procs = mp.spawn(_worker, args=(str(root),), nprocs=WORLD, join=False)
    finally:
        if old is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = old
    deadline = time.monotonic() + 120
    while not procs.join(timeout=1):
        if time.monotonic() > deadline:
            for p in procs.processes:
                p.kill()
            pytest.fail("the 2-rank run did not finish in 120 s (a collective that one rank never reached?)")
    results = [torch.load(f["results"] / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    return f, results


def _state(path: Path) -> tuple:
    from safetensors.torch import load

    from faceedit.training.loop import read_state_metadata

    raw = path.read_bytes()
    return load(raw), read_state_metadata(raw, path)


def _compare(a: dict, b: dict, prefixes=("G.", "G_ema.", "D.")) -> float:
    """The largest absolute difference of the tensors of ``a`` and ``b`` under ``prefixes``."""
    keys = [k for k in a if k.startswith(prefixes)]
    assert keys and set(keys) == {k for k in b if k.startswith(prefixes)}
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in keys)


def _moved(a: dict, b: dict) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if k.startswith("G."))


def test_two_ranks_train_as_one_process_and_resume_on_one(ranks, tmp_path):
    """The 2-rank job's state after 2 steps equals one process's after the same 2 steps on the same
    global batch (G, G_ema, D, the path-length mean, the logged losses); continued on 1 rank for 2
    more steps it equals one process's uninterrupted 4 steps."""
    from faceedit.training import job

    f, res = ranks
    two, meta2 = _state(f["watched"] / "run" / "checkpoint.safetensors")
    assert res[0]["job"]["world_size"] == 2 and res[0]["job"]["total_steps"] == STEPS
    assert not any(k.startswith(("rank", "world")) for k in two) and "rank" not in meta2["counters"]

    run1 = tmp_path / "one"
    kw = dict(data=f["pack"], mapping="mlp", minutes=5, device="cpu", max_steps=STEPS, overrides=JOB)
    job.run_job(run_dir=run1, **kw)
    one, meta1 = _state(run1 / "checkpoint.safetensors")
    assert meta1["counters"]["step"] == meta2["counters"]["step"] == STEPS
    assert meta1["counters"]["nimg"] == meta2["counters"]["nimg"]
    assert _compare(two, one) < ATOL
    assert abs(float(two["pl_mean"] - one["pl_mean"])) < ATOL and float(one["pl_mean"]) > 0
    rows = [(run / "loss.csv").read_text().splitlines() for run in (f["watched"] / "run", run1)]
    head = rows[0][0].split(",")
    for name in ("loss_G", "loss_D", "r1", "pl"):
        i = head.index(name)
        assert abs(float(rows[0][1].split(",")[i]) - float(rows[1][1].split(",")[i])) < 1e-4, name

    job.run_job(run_dir=run1, **kw)  # one process, 4 steps (its own resume is bit-exact: test_training)
    uninterrupted, _ = _state(run1 / "checkpoint.safetensors")
    run21 = tmp_path / "two_then_one"
    run21.mkdir()
    shutil.copy(f["watched"] / "run" / "checkpoint.safetensors", run21)
    s = job.run_job(run_dir=run21, **kw)
    assert s["source"].startswith("checkpoint") and s["world_size"] == 1 and s["total_steps"] == 2 * STEPS
    resumed, _ = _state(run21 / "checkpoint.safetensors")
    assert _moved(uninterrupted, one) > 20 * ATOL  # the last two steps moved G by far more than ATOL
    assert _compare(resumed, uninterrupted) < ATOL


def test_fast_step_two_ranks_are_identical_and_match_one_process(ranks):
    """The fast step (uncompiled on the CPU; style mixing on) under 2 ranks: the ranks
    hold bit-identical weights, Adam moments and path-length means, within ATOL of one process."""
    from faceedit.training.loop import TrainConfig, Trainer

    _, res = ranks
    a, b = res[0]["fast"], res[1]["fast"]
    assert [k for k in a if not k.startswith("rng.") and not torch.equal(a[k], b[k])] == []
    one = Trainer(TrainConfig(**FAST), _images(), "cpu")
    start = {k: v.clone() for k, v in one.state_tensors().items()}  # (on the CPU they share storage)
    one.train(max_steps=STEPS)
    ref = one.state_tensors()
    assert _moved(ref, start) > 20 * ATOL
    assert _compare(a, ref, ("G.", "G_ema.", "D.", "optG.", "optD.", "pl_mean")) < ATOL


def test_only_rank_zero_writes(ranks):
    """Rank 1 opens nothing for writing in the run folders, the export or the encoder's folder; rank 0
    writes the checkpoints, logs (GSNR included), samples, the export and the encoder's files once."""
    f, res = ranks
    assert res[1]["writes"] == []
    w = f["watched"]
    wrote = {Path(p).relative_to(w).as_posix() for p in res[0]["writes"]}
    for name in ("run/checkpoint.safetensors", "run/loss.csv", "run/gsnr.csv", "run/samples/latest.png",
                 "export/faces64.zip", "export/faces64.disc.safetensors", "export/faces64.resume.safetensors",
                 "fast/checkpoint.safetensors", "enc/encoder_wplus.safetensors", "enc/encoder_wplus.json",
                 "enc/encoder_wplus.train.pt"):
        assert name in wrote, (name, sorted(wrote))
    assert res[0]["encoder"]["ranks"] == 2 and set(res[1]["encoder"]) == {"rank", "world_size", "steps", "space"}
    with __import__("zipfile").ZipFile(w / "export" / "faces64.zip") as z:
        summary = json.loads(z.read("train.json"))
        assert summary["world_size"] == 2 and summary["rank"] == 0
        assert json.loads(z.read("config.json"))["provenance"]["hardware"] == "2 x cpu"


def test_encoder_two_ranks_train_as_one_process(ranks, tmp_path):
    """`train-encoder`'s job on 2 ranks (global batch 4: 2 real faces and 2 synthetic pairs per rank)
    leaves the encoder and latent discriminator one process leaves on the same batches, within ATOL,
    with the same logged losses; continued on 1 rank it goes on as one process would."""
    from faceedit.training import encoder

    f, res = ranks
    two = torch.load(f["watched"] / "enc" / "encoder_wplus.train.pt", weights_only=True)
    kw = dict(device="cpu", encoder_kwargs=encoder.encoder_width(8), **ENC)
    s = encoder.run(str(f["model"]), f["pack"], out=tmp_path / "one", **kw)
    one = torch.load(tmp_path / "one" / "encoder_wplus.train.pt", weights_only=True)
    for part in ("E_weights", "LD_weights"):
        worst = max(float((two[part][k] - one[part][k]).abs().max()) for k in one[part])
        assert worst < ATOL, part
    hist2 = res[0]["encoder"]["history"]
    assert [r["step"] for r in hist2] == [r["step"] for r in s["history"]] == [1, 2, 3]
    for r2, r1 in zip(hist2, s["history"]):
        for k in ("pix", "perc", "lat", "adv", "ld"):
            assert abs(r2[k] - r1[k]) < 1e-4 * max(1.0, abs(r1[k])), (k, r2, r1)
    # resume: the 2-rank state continued here for 2 steps against one process's 3 + 2 steps
    shutil.copytree(f["watched"] / "enc", tmp_path / "two_then_one")
    more = {**kw, "steps": 2}
    encoder.run(str(f["model"]), f["pack"], out=tmp_path / "two_then_one", **more)
    encoder.run(str(f["model"]), f["pack"], out=tmp_path / "one", **more)
    a = torch.load(tmp_path / "two_then_one" / "encoder_wplus.train.pt", weights_only=True)
    b = torch.load(tmp_path / "one" / "encoder_wplus.train.pt", weights_only=True)
    assert a["opt"]["step"] == b["opt"]["step"] == 5
    assert max(float((a["E_weights"][k] - b["E_weights"][k]).abs().max()) for k in b["E_weights"]) < ATOL
    moved = max(float((b["E_weights"][k] - one["E_weights"][k]).abs().max()) for k in b["E_weights"])
    assert moved > 20 * ATOL


def test_ranks_that_see_different_files_are_refused_on_every_rank(ranks):
    _, res = ranks
    for r in res:
        assert "the ranks disagree on where the run continues from" in r["disagree"]
        assert "run folder 0" in r["disagree"] and "run folder 1" in r["disagree"] and "mounts" in r["disagree"]


def test_batch_that_does_not_split_over_the_ranks_is_refused():
    from faceedit.core.distributed import DistContext
    from faceedit.core.errors import TrainingError
    from faceedit.training.loop import TrainConfig, Trainer, batch_rows

    with pytest.raises(TrainingError, match="multiple of 12"):
        Trainer(TrainConfig(**TINY), _images(), "cpu", dist=DistContext(rank=0, world_size=3))
    with pytest.raises(TrainingError, match="multiple of 8"):
        batch_rows(torch.zeros(12), DistContext(rank=1, world_size=2), group=4)


@pytest.mark.parametrize("world,group", [(2, 4), (4, 2), (3, 1)])
def test_rank_rows_are_whole_minibatch_std_groups(world, group):
    """The union of the ranks' rows is the batch, once each; each rank's local minibatch-std groups
    (its rows ``j, j + b/g, ...``) are groups of the global batch, so D sees the same groups."""
    from faceedit.core.distributed import DistContext
    from faceedit.training.loop import batch_rows

    n = 24
    x = torch.arange(n)
    parts = [batch_rows(x, DistContext(rank=r, world_size=world), group) for r in range(world)]
    assert sorted(torch.cat(parts).tolist()) == list(range(n))
    global_groups = {tuple(sorted(c.tolist())) for c in x.reshape(group, -1).T}
    for p in parts:
        assert {tuple(sorted(c.tolist())) for c in p.reshape(group, -1).T} <= global_groups
