"""The checkpoint size budget: no small file may make a reader allocate GiBs (issue #23).

Every hostile file of ``hostile_builders.KINDS`` (zip entries that inflate 1000:1, stride-0
tensors, generator records with absurd or merely too large widths, configs larger than their
tensors, in every format faceedit reads) must be refused with a message naming the field or
the limit, never with torch's internals. The in-process loads run under an address-space
limit (:func:`address_space_guard`): a regression fails with ``MemoryError`` rather than
taking the machine. One test loads the worst kinds in a fresh process and bounds its peak RSS.
"""
from __future__ import annotations

import contextlib
import io
import os
import pickle
import random
import resource

import pytest
import torch

from faceedit.checkpoints import CheckpointError, load_model, save_native
from faceedit.checkpoints.budget import (DEFAULT_MAX_BYTES, ENV_VAR, Budget, CheckpointSizeError, human_bytes,
                                         resolve_max_bytes)
from faceedit.checkpoints.native import plan_network
from faceedit.networks import Discriminator, Generator, Generator1

import hostile_builders as hb

TORCH_INTERNALS = hb.TORCH_INTERNALS
BOMB = (1 << 30) + (1 << 28)  # 1.25 GiB: more than address_space_guard leaves, so a regression cannot pass


@contextlib.contextmanager
def address_space_guard(extra: int = 1 << 30):
    """Let this process map at most ``extra`` more bytes inside the block (``RLIMIT_AS``, soft limit)."""
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) for line in f if line.startswith("VmSize:")) * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (vm + extra, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# --------------------------------------------------------------------------- sizes from configs
def _built_size(m: torch.nn.Module) -> tuple:
    state = sum(v.numel() for v in m.state_dict().values())
    total = sum(p.numel() for p in m.parameters()) + sum(b.numel() for b in m.buffers())
    return state, total - state


def test_network_sizes_from_configs_match_built_networks():
    """``Generator.size`` & co. (what the budget charges, nothing built) equal the built networks'
    counts on random configs of every kind: MLP and transformer mappings, StyleGAN v1, both D convs."""
    rng = random.Random(0)
    checked = 0
    while checked < 24:
        res = 2 ** rng.randint(4, 6)
        base, cmax = rng.randint(16, 2048), rng.randint(1, 24)
        if min(base // res, cmax) < 1:
            continue
        common = dict(z_dim=rng.randint(1, 24), w_dim=rng.choice([4, 8, 12]), resolution=res, channel_base=base,
                      channel_max=cmax, img_channels=rng.randint(1, 4))
        g = dict(common, mapping_layers=rng.randint(1, 4))
        if checked % 3 == 0:
            g.update(mapping_kind="transformer", mapping_blocks=rng.randint(1, 3), mapping_heads=rng.choice([1, 2, 4]))
        cases = [(Generator, g), (Generator1, dict(common, mapping_layers=rng.randint(1, 3),
                                                  fused_scale=rng.choice([True, False, "auto"]))),
                 (Discriminator, dict(resolution=res, channel_base=base, channel_max=cmax,
                                      img_channels=common["img_channels"],
                                      down_conv=rng.choice(["decimate", "strided"])))]
        for cls, kw in cases:
            assert cls.size(**kw) == _built_size(cls(**kw)), (cls.__name__, kw)
        checked += 1


def test_the_default_budget_admits_a_1024px_stylegan2_with_its_discriminator():
    """config-f G and D, read from fp32 files and built in fp32, charge about 0.5 GB: 8x under the default."""
    budget = Budget(None, "config-f")
    g = plan_network("generator", dict(resolution=1024), "G", budget)
    d = plan_network("discriminator", dict(resolution=1024), "D", budget)
    budget.charge(4 * (g + d), "the fp32 weight files")
    assert 0.45e9 < budget.used < 0.55e9 and budget.used * 8 < DEFAULT_MAX_BYTES == budget.limit


# --------------------------------------------------------------------------- the hostile files
@pytest.mark.parametrize("kind", list(hb.KINDS))
def test_hostile_file_is_refused_naming_the_field_or_limit(tmp_path, kind):
    path = hb.KINDS[kind][0](tmp_path, BOMB)
    with address_space_guard(), pytest.raises(CheckpointError) as e:
        load_model(path)
    assert hb.clear_refusal(kind, str(e.value)), (kind, str(e.value))


def test_the_worst_hostile_files_stay_under_1_gib_in_a_fresh_process(tmp_path):
    """The three kinds issue #23 measured at 7 GB, 8.7 GB and terabytes: refused, peak RSS < 1 GiB."""
    paths = [hb.KINDS[k][0](tmp_path, BOMB) for k in hb.WORST]
    results, rss_mib = hb.load_in_fresh_process(paths, limit_gib=1.5)
    assert [r["outcome"] for r in results] == ["refused"] * len(paths), results
    assert rss_mib < 1024, rss_mib


# --------------------------------------------------------------------------- the limit and how to raise it
def test_the_limit_is_exact_and_can_be_raised_on_purpose(tmp_path):
    """A tiny model charges exactly its fp32 network plus its file: one byte less is refused with a
    message saying how to raise the limit; the keyword and the variable raise it."""
    d = tmp_path / "tiny"
    save_native(d, Generator(**hb.TINY), name="tiny")
    need = 4 * sum(Generator.size(**hb.TINY)) + (d / "model.safetensors").stat().st_size
    assert load_model(d, max_bytes=need).G.resolution == 16
    hint = rf"above the {human_bytes(need - 1)} limit.*{ENV_VAR}=1 or pass max_bytes={1 << 30} to load_model"
    with pytest.raises(CheckpointSizeError, match=hint):
        load_model(d, max_bytes=need - 1)
    old = os.environ.get(ENV_VAR)
    try:
        os.environ[ENV_VAR] = str((need - 1) / 2 ** 30)
        with pytest.raises(CheckpointSizeError, match="limit"):
            load_model(d)
        os.environ[ENV_VAR] = str(need / 2 ** 30 * 1.001)
        assert load_model(d).G.resolution == 16
    finally:
        os.environ.pop(ENV_VAR) if old is None else os.environ.__setitem__(ENV_VAR, old)


def test_raising_the_limit_as_advised_never_builds_a_network_its_file_cannot_hold(tmp_path, monkeypatch):
    """A 4.1 G-parameter record is refused by the default budget with the limit that would admit it;
    raised to that limit, it is still refused, by the count of values its file holds, before building."""
    import re

    path = hb.nvidia_sg3_repo_over_budget(tmp_path)
    with pytest.raises(CheckpointSizeError, match=r"15.2 GiB in fp32.*above the 4 GiB limit") as e:
        load_model(path)
    advised = re.search(rf"{ENV_VAR}=(\d+)", str(e.value)).group(1)
    assert int(advised) == 16
    monkeypatch.setenv(ENV_VAR, advised)
    with address_space_guard(), pytest.raises(CheckpointSizeError, match=r"hold [\d,]+ values but the generator"):
        load_model(path)


@pytest.mark.parametrize("bad", ["zero", "-1", "lots", "nan", "inf"])
def test_a_bad_limit_variable_is_named(monkeypatch, bad):
    monkeypatch.setenv(ENV_VAR, {"zero": "0"}.get(bad, bad))
    with pytest.raises(CheckpointSizeError, match=ENV_VAR):
        resolve_max_bytes()
    with pytest.raises(CheckpointSizeError, match="max_bytes"):
        resolve_max_bytes(-5)
    assert resolve_max_bytes(123) == 123


# --------------------------------------------------------------------------- torch's advice is never passed on
class _Shell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_refusals_never_suggest_weights_only_false(tmp_path):
    """torch's weights_only refusal says "Re-running with weights_only=False will likely succeed";
    faceedit keeps what torch found and gives its own advice, for a rosinality .pt and for a
    nested storage of an NVIDIA pickle."""
    marker = tmp_path / "pwned"
    pt = tmp_path / "evil.pt"
    torch.save({"g_ema": {"style.1.weight": torch.zeros(2, 2)}, "args": _Shell(marker)}, pt)
    buf = io.BytesIO()
    torch.save(_Shell(marker), buf)
    nested = tmp_path / "nested.pkl"
    nested.write_bytes(pickle.dumps({"G_ema": hb._NestedStorage(buf.getvalue())}, protocol=2))
    for path, own_advice in ((pt, "faceedit convert"), (nested, "malicious or damaged")):
        with pytest.raises(CheckpointError) as e:
            load_model(path)
        msg = str(e.value)
        assert "posix.system" in msg and own_advice in msg and "nothing" in msg, msg
        assert not any(w in msg for w in TORCH_INTERNALS), msg
    assert not marker.exists()
