"""Batch runs across processes (issue #20): `torchrun ... -m faceedit invert DIR` on the CPU with gloo.

* The groups dealt to the ranks are the same whatever the number of ranks, and every input
  lands in exactly one.
* The manifest: concurrent writers (journals and the list file) never leave a damaged or lost
  line, a line cut short by a kill is not read; each input's state (done / failed with its
  message / pending) reads back; a failed photo is not tried again without --retry-failed.
* 2 processes write what 1 process writes, file for file: images and latent tensors byte for
  byte, records equal but for the output folder's path and the wall-clock seconds they carry.
* A rank killed with SIGKILL mid-run: every file in the folder is whole, the re-run finishes
  the folder, nothing done before is written again and no input has two results.

The runs are real processes (``python -m torch.distributed.run --standalone``, OMP_NUM_THREADS=1)
on a 16 px generator saved with ``save_native``; photos are copies of ../shared/datasets/photos.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from faceedit.core.distributed import DistContext, group_shards

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "photos"
#: Photos with one face, one with two, one with none (dlib finds no face in the grass).
FOLDER = ("face_recognition__obama.jpg", "face_recognition__two_people.jpg", "face_alignment__grass.jpg",
          "insightface__RD_d1.jpeg", "insightface__bulk_Rob_Lowe_0001.jpg")
FAST = ["--steps", "3", "--prior", "none", "--perceptual", "none"]


# --------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from faceedit.alignment.types import FACES64
    from faceedit.checkpoints.native import save_native
    from faceedit.networks import Generator

    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, resolution=16, mapping_layers=2, channel_base=128, channel_max=16)
    return save_native(tmp_path_factory.mktemp("tiny") / "tiny", G, name="tiny", recipe=FACES64.to_dict())


def photo_folder(folder: Path, names=FOLDER) -> Path:
    if not PHOTOS.is_dir():
        pytest.skip("../shared/datasets/photos is not beside the checkout")
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copy(PHOTOS / n, folder / n)
    return folder


def crops(folder: Path, n: int) -> Path:
    from faceedit.core.images import save_image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        save_image(folder / f"crop{i:02d}.png", np.clip(rng.normal(128, 40, (16, 16, 3)), 0, 255).astype(np.uint8))
    return folder


def env(tmp_path) -> dict:
    e = dict(os.environ, OMP_NUM_THREADS="1", FACEEDIT_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(k, None)
    return e


def faceedit_cmd(args, nproc: int = 1) -> list:
    if nproc == 1:
        return [sys.executable, "-m", "faceedit", *map(str, args)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", "faceedit", *map(str, args)]


def run(args, tmp_path, nproc: int = 1, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(faceedit_cmd(args, nproc), env=env(tmp_path), capture_output=True, text=True,
                          timeout=timeout)


def manifest_lines(out: Path) -> list:
    """Every whole line of the folder's list and journals, parsed (a damaged line fails the test)."""
    from faceedit.outputs import JOURNALS, MANIFEST

    files = [out / MANIFEST] + sorted((out / JOURNALS).glob("*.jsonl"))
    lines = []
    for f in files:
        if f.is_file():
            text = f.read_text()
            assert text == "" or text.endswith("\n"), f"{f} ends in a cut line"
            lines += [json.loads(x) for x in text.splitlines()]
    return lines


def check_whole(out: Path) -> list:
    """Every record parses and names a latent that loads and images that decode; no temporary file left."""
    from faceedit.core.images import load_image
    from faceedit.inversion.latent import Latent

    recs = sorted(out.glob("*_[0-9].json"))
    for j in recs:
        rec = json.loads(j.read_text())
        assert torch.isfinite(Latent.load(rec["latent"]).codes).all()
        assert load_image(rec["reconstruction"]).shape == (16, 16, 3)
        load_image(rec["side_by_side"])
    assert not [p for p in out.rglob("*") if p.name.endswith(".part")]
    return recs


# --------------------------------------------------------------------------- sharding
@pytest.mark.parametrize("n,size", [(0, 4), (1, 16), (7, 2), (17, 4), (32, 16)])
def test_groups_do_not_depend_on_the_number_of_ranks(n, size):
    one = group_shards(n, size, DistContext())
    assert [i for g in one for i in g] == list(range(n)) and all(len(g) <= size for g in one)
    for world in (2, 3, 5):
        dealt = [g for r in range(world) for g in group_shards(n, size, DistContext(rank=r, world_size=world))]
        assert sorted(dealt, key=lambda g: g.start) == one  # the same groups, each on one rank
        for r in range(world):  # group g on rank g mod world
            mine = group_shards(n, size, DistContext(rank=r, world_size=world))
            assert all(g.start // size % world == r for g in mine)


def test_loader_workers_from_the_cores_per_process():
    from faceedit.batchrun import loader_workers

    assert loader_workers(cores=2, per_node=1) == 1
    assert loader_workers(cores=2, per_node=2) == 0
    assert loader_workers(cores=1, per_node=1) == 0
    assert loader_workers(cores=16, per_node=1) == 15 and loader_workers(cores=16, per_node=8) == 1
    assert loader_workers(3, cores=1, per_node=1) == 3


# --------------------------------------------------------------------------- the manifest
def _write_states(root: str, journal: bool, n: int, who: int) -> None:
    from faceedit.outputs import OutputFolder

    folder = OutputFolder(root, command="invert", journal=journal)
    for i in range(n):
        folder.record_states([{"input": f"/photos/{who}_{i}.jpg", "state": "done", "files": [],
                               "note": "x" * (i * 37 % 3000)}], settings="k", run="r")


def test_concurrent_writers_never_damage_the_manifest(tmp_path):
    """Four processes at once, two with journals of their own and two on the list file, write 60
    lines each (up to 3 kB) while this process reads: every line arrives whole and once, and the
    counts the progress bar reads are right; a line cut short (a writer killed mid-line) is not read."""
    from faceedit.outputs import JOURNALS, OutputFolder

    # forked: the writers only append lines (no thread pool of this process is used in them)
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    procs = [ctx.Process(target=_write_states, args=(str(tmp_path), who < 2, 60, who)) for who in range(4)]
    for p in procs:
        p.start()
    reader = OutputFolder(tmp_path, command="invert")
    seen = []
    while any(p.is_alive() for p in procs):
        seen.append(reader.finished_in("r"))
        time.sleep(0.01)
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert seen == sorted(seen)  # the count only grows
    lines = [e for e in manifest_lines(tmp_path) if e.get("state")]
    assert len(lines) == 240 and len({e["input"] for e in lines}) == 240
    assert reader.finished_in("r") == 240 and len(list((tmp_path / JOURNALS).glob("*.jsonl"))) == 2
    assert reader.input_state("/photos/0_7.jpg", "k")[0] == "done" and reader.input_state("/photos/9.jpg", "k") is None
    journal = sorted((tmp_path / JOURNALS).glob("*.jsonl"))[0]
    with open(journal, "a") as f:
        f.write('{"input": "/photos/x.jpg", "state": "done", "command": "invert", "settings": "k", "run": "r"')
    assert OutputFolder(tmp_path, command="invert").finished_in("r") == 240 and reader.finished_in("r") == 240


def test_manifest_states_and_retry_failed(tiny, tmp_path, monkeypatch):
    """A photo over --max-pixels fails and is recorded so, with its message; a re-run with the limit
    raised does not try it again (listed, exit 1), --retry-failed does; done photos are never redone."""
    from faceedit.cli import cli
    from faceedit.outputs import OutputFolder, settings_key

    monkeypatch.setenv("FACEEDIT_HOME", str(tmp_path / "home"))
    src = photo_folder(tmp_path / "in", ("insightface__bulk_Rob_Lowe_0001.jpg", "face_recognition__obama.jpg"))
    out = tmp_path / "out"
    args = ["--device", "cpu", "invert", str(src), "--model", str(tiny), *FAST, "--workers", "0", "--out", str(out)]
    big, small = src / "face_recognition__obama.jpg", src / "insightface__bulk_Rob_Lowe_0001.jpg"
    r = CliRunner().invoke(cli, [*args, "--max-pixels", "100000"])
    assert r.exit_code == 1 and "face_recognition__obama.jpg" in r.output and "max-pixels" in r.output, r.output
    folder = OutputFolder(out, command="invert")
    (key,) = {e["settings"] for e in manifest_lines(out) if e.get("state")}
    state, line = folder.input_state(small, key)
    assert state == "done" and line["files"] == ["insightface__bulk_Rob_Lowe_0001_0.json"] and line["faces"] == [0]
    state, line = folder.input_state(big, key)
    assert state == "failed" and "over the limit" in line["error"]
    assert folder.input_state(big, settings_key({"other": 1})) is None
    done_at = (out / "insightface__bulk_Rob_Lowe_0001_0.json").stat().st_mtime_ns

    r = CliRunner().invoke(cli, args)  # the default limit would take it, but it failed before: not tried
    assert r.exit_code == 1 and "failed in an earlier run" in r.output and "--retry-failed" in r.output, r.output
    assert "over the limit" in r.output and not (out / "face_recognition__obama_0.json").exists()
    assert "nothing to do" in r.output
    r = CliRunner().invoke(cli, [*args, "--retry-failed"])
    assert r.exit_code == 0, r.output
    assert folder.input_state(big, key)[0] == "done" and (out / "face_recognition__obama_0.json").is_file()
    assert (out / "insightface__bulk_Rob_Lowe_0001_0.json").stat().st_mtime_ns == done_at
    states = [(Path(e["input"]).name, e["state"]) for e in manifest_lines(out) if e.get("state")]
    assert states.count(("face_recognition__obama.jpg", "failed")) == 1  # the second run did not try it
    assert states.count(("insightface__bulk_Rob_Lowe_0001.jpg", "done")) == 1
    record = out / "face_recognition__obama_0.json"
    record.write_text(record.read_text().replace('"seed": 0', '"seed": 0 '))  # rewritten by another run
    assert folder.input_state(big, key)[0] == "pending"
    shutil.copy(PHOTOS / "face_recognition__two_people.jpg", small)  # another photo under the same name
    assert folder.input_state(small, key)[0] == "pending"


# --------------------------------------------------------------------------- processes
_WALL_CLOCK = ("seconds", "seconds_batch")
#: A traceback frame in faceedit's code (torchrun prints a traceback of its own when a rank exits 1).
OUR_FRAME = re.compile(r'File "[^"]*/(faceedit|core|alignment|inversion|networks|checkpoints)/[^"]*\.py"')


def _comparable(value, out: Path):
    """A record's content with the output folder's path taken out and wall-clock seconds dropped."""
    if isinstance(value, dict):
        return {k: _comparable(v, out) for k, v in value.items() if k not in _WALL_CLOCK}
    if isinstance(value, list):
        return [_comparable(v, out) for v in value]
    if isinstance(value, str):
        return value.replace(str(out.resolve()), "OUT")
    return value


def test_two_processes_write_what_one_process_writes(tiny, tmp_path):
    from faceedit.core.images import load_image
    from faceedit.inversion.latent import Latent

    src = photo_folder(tmp_path / "in")
    outs = {1: tmp_path / "one", 2: tmp_path / "two"}
    for nproc, out in outs.items():
        r = run(["--device", "cpu", "invert", src, "--model", tiny, "--face", "all", "--batch", "2", *FAST,
                 "--out", out], tmp_path, nproc=nproc)
        assert r.returncode == 1 and "1 of 5 photo(s) failed" in r.stderr, (nproc, r.stderr[-3000:])  # the grass
        assert "face_alignment__grass.jpg" in r.stderr and not OUR_FRAME.search(r.stderr), r.stderr[-3000:]
        assert "inverted 5 face(s) from 4 photo(s)" in r.stdout and f"on {nproc} process(es)" in r.stdout, r.stdout
    names = {n: sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) for n, out in outs.items()}
    assert names[1] == names[2] and len(names[1]) == 5 * 4
    for name in names[1]:
        a, b = outs[1] / name, outs[2] / name
        if name.endswith(".png"):
            assert a.read_bytes() == b.read_bytes(), name
            assert load_image(a).shape[0] >= 16
        elif name.endswith(".safetensors"):
            la, lb = Latent.load(a), Latent.load(b)
            assert la.codes.numpy().tobytes() == lb.codes.numpy().tobytes(), name
            assert _comparable(la.meta, outs[1]) == _comparable(lb.meta, outs[2]), name
        else:
            ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
            assert _comparable(ra, outs[1]) == _comparable(rb, outs[2]), name
    states = {n: sorted((Path(e["input"]).name, e["state"], e.get("error", "").split(":")[0])
                        for e in manifest_lines(out) if e.get("state") in ("done", "failed"))
              for n, out in outs.items()}
    assert states[1] == states[2] and ("face_alignment__grass.jpg", "failed", "FaceNotFoundError") in states[1]
    ranks = {e["rank"] for e in manifest_lines(outs[2]) if e.get("state") == "done"}
    assert ranks == {0, 1}  # both processes worked


def _journal_pids(out: Path) -> dict:
    """``{rank: pid}`` from the journals' header lines."""
    from faceedit.outputs import JOURNALS

    pids = {}
    for f in (out / JOURNALS).glob("*.jsonl") if (out / JOURNALS).is_dir() else ():
        text = f.read_text()
        if text.endswith("\n"):
            head = json.loads(text.splitlines()[0])
            pids[head["rank"]] = head["pid"]
    return pids


def test_killed_rank_then_a_rerun_finish_the_folder(tiny, tmp_path):
    """SIGKILL to rank 1 once it has finished a group: torchrun stops the launch; every file left is
    whole, the unfinished inputs read as pending, and a re-run (one process) finishes the folder
    without writing again what was done or giving any input a second result."""
    from faceedit.core.images import load_image
    from faceedit.inversion.latent import Latent
    from faceedit.outputs import OutputFolder

    src = crops(tmp_path / "in", 12)
    out = tmp_path / "out"
    args = ["--device", "cpu", "invert", src, "--aligned", "--model", tiny, "--space", "w+", "--steps", "60",
            "--prior", "none", "--perceptual", "none", "--batch", "1", "--out", out]
    proc = subprocess.Popen(faceedit_cmd(args, 2), env=env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        t0 = time.time()
        while time.time() - t0 < 180 and proc.poll() is None:
            done_by_1 = [e for e in manifest_lines(out) if e.get("state") == "done" and e["rank"] == 1] \
                if out.is_dir() else []
            if done_by_1:
                break
            time.sleep(0.05)
        pids = _journal_pids(out)
        if proc.poll() is not None or 1 not in pids:
            pytest.skip("the launch ended before rank 1 could be killed mid-run (machine too fast or too slow)")
        os.kill(pids[1], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0, err[-3000:]
    lines = manifest_lines(out)  # raises on a damaged line
    done_before = {e["input"] for e in lines if e.get("state") == "done"}
    assert 1 <= len(done_before) < 12, err[-3000:]
    key = next(e["settings"] for e in lines if e.get("state"))
    folder = OutputFolder(out, command="invert")
    states = {p.name: folder.input_state(p, key)[0] for p in sorted(src.iterdir())}
    assert set(states.values()) == {"done", "pending"} and sum(v == "done" for v in states.values()) == len(done_before)
    whole_before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()
                    if p.is_file() and not p.name.startswith(".") and str(src / (p.name.split("_")[0] + ".png"))
                    in done_before}
    for j in out.glob("*_0.json"):  # the killed launch's records (each written last) name whole files
        rec = json.loads(j.read_text())
        assert torch.isfinite(Latent.load(rec["latent"]).codes).all() and load_image(rec["reconstruction"]).size

    r = run(args, tmp_path, nproc=1)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resuming: {len(done_before)} face(s) already done" in r.stderr, r.stderr[-2000:]
    recs = check_whole(out)
    assert sorted(p.name for p in recs) == [f"crop{i:02d}_0.json" for i in range(12)]  # one result per input
    assert not [p for p in out.iterdir() if re.search(r"_png_", p.name)]
    assert all(p.stat().st_mtime_ns == t for p, t in ((out / n, t) for n, t in whole_before.items()))
    done = [e["input"] for e in manifest_lines(out) if e.get("state") == "done"]
    assert sorted(done) == sorted(set(done)) and len(done) == 12  # each input done once
    assert all(folder.input_state(p, key)[0] == "done" for p in src.iterdir())


@pytest.fixture(scope="module")
def tiny_dirs(tiny, tmp_path_factory):
    """Two 'directions' of the tiny generator (GANSpace axes named smile and age)."""
    from dataclasses import replace

    from faceedit.checkpoints.registry import load_model
    from faceedit.editing.fit import ganspace, sample_codes

    m = load_model(tiny)
    root = tmp_path_factory.mktemp("dirs")
    for d, name in zip(ganspace(sample_codes(m.G, 2000), model_id=m.model_id, num_ws=m.G.num_ws, k=2),
                       ("smile", "age")):
        replace(d, attribute=name, method="manual").save(root)
    return root


@pytest.mark.slow
def test_edit_and_align_under_torchrun_write_what_one_process_writes(tiny, tiny_dirs, tmp_path):
    """`edit DIR` and `align DIR` dealt to 2 processes: the same files as 1 process, each input's
    state recorded once, the failure listed by rank 0 with exit code 1."""
    from faceedit.inversion.latent import Latent

    src = photo_folder(tmp_path / "in")
    commands = {"edit": ["edit", src, "--model", tiny, "--directions", tiny_dirs, "--attr", "smile", "--steps", "2"],
                "align": ["align", src, "--workers", "1"]}
    for name, args in commands.items():
        outs = {n: tmp_path / f"{name}{n}" for n in (1, 2)}
        for nproc, out in outs.items():
            r = run(["--device", "cpu", *args, "--out", out], tmp_path, nproc=nproc)
            assert r.returncode == 1 and "face_alignment__grass.jpg" in r.stderr, (name, nproc, r.stderr[-3000:])
            assert not OUR_FRAME.search(r.stderr), r.stderr[-3000:]
        files = {n: sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) for n, out in outs.items()}
        assert files[1] == files[2] and len(files[1]) >= 8, (name, files)
        for f in files[1]:
            a, b = outs[1] / f, outs[2] / f
            if f.endswith(".png"):
                assert a.read_bytes() == b.read_bytes(), (name, f)
            elif f.endswith(".safetensors"):
                assert Latent.load(a).codes.numpy().tobytes() == Latent.load(b).codes.numpy().tobytes(), (name, f)
            elif f.endswith(".json") and f != "failures.json":
                ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
                ra.pop("timings", None), rb.pop("timings", None)
                assert _comparable(ra, outs[1]) == _comparable(rb, outs[2]), (name, f)
        for out in outs.values():
            final = [(Path(e["input"]).name, e["state"]) for e in manifest_lines(out) if e.get("state") in
                     ("done", "failed")]
            assert len(final) == 5 == len(set(final)) and ("face_alignment__grass.jpg", "failed") in final, final
