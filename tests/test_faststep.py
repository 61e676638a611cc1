"""The fast training step against the reference step: same draws, same losses and gradients."""
import copy
import csv
import math

import pytest
import torch
import torch.nn.functional as F

from faceedit.training.faststep import FastStep, d_main_loss, draw_fakes, g_main_loss
from faceedit.training.loop import TrainConfig, Trainer
from test_training import TINY, _images  # the training tests' tiny setup


def _trainer(mapping="mlp", **kw):
    tr = Trainer(TrainConfig(mapping=mapping, **{**TINY, **kw}), _images(), "cpu")
    # Non-zero noise strengths and biases, so that the noise maps and every epilogue term matter.
    with torch.no_grad():
        for name, p in tr.G.named_parameters():
            if name.endswith("noise_strength") or (name.endswith("bias") and "synthesis" in name):
                p.copy_(torch.randn_like(p) * 0.3)
    return tr


def _rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@pytest.mark.parametrize("mapping", ["mlp", "transformer"])
def test_draws_replay_the_reference_step_exactly(mapping):
    """Seeded alike, draw_fakes draws what the reference step draws, in the same order: the
    G-main loss of the reference code and g_main_loss on the draws (reference path) are equal."""
    tr = _trainer(mapping)
    G, D = tr.G, tr.D
    torch.manual_seed(5)
    fake, _ = tr.generate(G, 8)
    ref = F.softplus(-D(tr.aug(fake))).mean()
    torch.manual_seed(5)
    d = draw_fakes(G, 8, tr.cfg.mixing_prob, tr.aug.policy, "cpu")
    ours = g_main_loss(G, D, d, path="shared")
    assert torch.equal(ours, ref), (float(ours), float(ref))
    # and the draws matter: other draws give another loss
    other = g_main_loss(G, D, draw_fakes(G, 8, tr.cfg.mixing_prob, tr.aug.policy, "cpu"), path="shared")
    assert not torch.equal(other, ref)


@pytest.mark.parametrize("mapping", ["mlp", "transformer"])
def test_fast_path_losses_and_gradients_match_reference_on_a_fixed_batch(mapping):
    """G main and D main through the polyphase path (the fast step's) against the shared-conv
    path (the reference step's) on one set of draws: losses within 1e-5, every parameter
    gradient within 1e-4 relative (fp32, CPU)."""
    tr = _trainer(mapping)
    G, D = tr.G, tr.D
    torch.manual_seed(1)
    d = draw_fakes(G, 8, tr.cfg.mixing_prob, tr.aug.policy, "cpu")
    real = tr.real_batch(8)
    real_aug = tr.aug.sample(8, 16)

    def g_grads(path):
        G.zero_grad(set_to_none=True)
        G.mapping.w_avg.zero_()
        loss = g_main_loss(G, D, d, path)
        loss.backward()
        return loss.detach(), {k: p.grad.clone() for k, p in G.named_parameters() if p.grad is not None}

    def d_grads(path):
        D.zero_grad(set_to_none=True)
        with torch.no_grad():
            from faceedit.training.faststep import generate
            fake = generate(G, d, path)
        loss, _, _ = d_main_loss(D, fake, d.aug, real, real_aug)
        loss.backward()
        return loss.detach(), {k: p.grad.clone() for k, p in D.named_parameters()}

    for fn in (g_grads, d_grads):
        ref_loss, ref_g = fn("shared")
        new_loss, new_g = fn("poly")
        assert abs(float(new_loss - ref_loss)) < 1e-5 * max(1.0, abs(float(ref_loss))), fn.__name__
        assert ref_g.keys() == new_g.keys() and len(ref_g) > 10
        worst = max((_rel(new_g[k], ref_g[k]), k) for k in ref_g if ref_g[k].norm() > 0)
        assert worst[0] < 1e-4, (fn.__name__, worst)


def test_fast_step_trains_logs_regularisers_and_resumes_bit_identically(tmp_path):
    """The fast step (uncompiled on the CPU) runs every phase, keeps the counters, and a run
    resumed from its checkpoint continues exactly as the uninterrupted one."""
    a = _trainer(fast=True)
    assert isinstance(a.fast_step, FastStep) and not a.fast_step.compiled
    b = copy.deepcopy(a)
    a.run_dir = tmp_path
    s = a.train(max_steps=2)
    assert s["steps"] == 2 and a.nimg == 16 and not s["stopped_on_nan"]
    row = a.loss_rows[-1]
    for k in ("loss_G", "loss_D", "r1", "pl", "pl_mean"):
        assert math.isfinite(float(row[k])), (k, row)
    a.train(max_steps=2)
    a.run_dir = None  # the uninterrupted run goes on (the RNG is global: finish it before c starts)
    a.train(max_steps=2)
    c = Trainer(a.cfg, _images(), "cpu", run_dir=tmp_path)
    c.load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert c.step_count == 4
    c.train(max_steps=2)
    ta, tc = a.state_tensors(), c.state_tensors()
    assert set(ta) == set(tc) and any(k.startswith("optG.") for k in ta)
    assert [k for k in ta if not torch.equal(ta[k], tc[k])] == []
    # the untouched copy did not move: the step acts on its own trainer only
    assert b.step_count == 0


@pytest.mark.parametrize("beta1", [0.0, 0.5])
def test_checkpoint_leaves_out_adams_first_moment_only_when_beta1_is_zero(tmp_path, beta1):
    """With beta1 = 0 the saved state has no exp_avg (the next step overwrites it) and a resumed run
    still continues exactly; with beta1 > 0 it is kept."""
    a = _trainer(fast=True, beta1=beta1)
    a.run_dir = tmp_path
    a.train(max_steps=2)
    saved = a.state_tensors()
    assert any(k.endswith(".exp_avg_sq") for k in saved)
    assert any(k.endswith(".exp_avg") for k in saved) == (beta1 > 0)
    c = Trainer(a.cfg, _images(), "cpu", run_dir=tmp_path)
    c.load_checkpoint(tmp_path / "checkpoint.safetensors")
    a.run_dir = None
    a.train(max_steps=2)
    c.train(max_steps=2)
    ta, tc = a.state_tensors(), c.state_tensors()
    assert [k for k in ta if not torch.equal(ta[k], tc[k])] == []


def test_fast_step_scales_the_path_length_decay_with_the_batch():
    tr = _trainer(fast=True, batch=64)
    assert tr.fast_step.pl_decay == pytest.approx(tr.cfg.pl_decay * 64 / 128)


def test_continue_from_a_native_checkpoint_with_only_g_ema_and_d(tmp_path):
    """A shipped-style folder (G_ema + D + provenance, no G, no Adam) continues: G and G_ema start
    at its G_ema, D at its D, counters from its provenance, the path-length mean re-estimated;
    an override that would change the architecture is refused."""
    from faceedit.checkpoints.native import save_native
    from faceedit.training.export import init_from_native, native_train_config

    src = _trainer()
    src.train(max_steps=2)
    prov = {"steps": 2, "images_seen": 16, "minutes": 0.5,
            "training": {"batch": 8, "lr": 0.002, "r1_gamma": 0.2, "pl_weight": 2.0, "ema_kimg": 20.0,
                         "augment": "color,translation,cutout", "mirror": True, "style_mixing": None}}
    folder = save_native(tmp_path / "m", src.G_ema, name="m", D=src.D, recipe=None, license="", provenance=prov)
    cfg = native_train_config(folder, {"fast": True, "batch": 12, "log_every": 2, "gsnr_every": 0,
                                       "profile_every": 0, "r1_every": 2, "pl_every": 2})
    assert (cfg.batch, cfg.fast, cfg.channel_max, cfg.z_dim) == (12, True, 16, 16)
    tr = Trainer(cfg, _images(), "cpu")
    init_from_native(tr, folder)
    for k, v in src.G_ema.state_dict().items():
        assert torch.equal(tr.G.state_dict()[k], v) and torch.equal(tr.G_ema.state_dict()[k], v), k
    for k, v in src.D.state_dict().items():
        assert torch.equal(tr.D.state_dict()[k], v), k
    assert (tr.step_count, tr.nimg, tr.train_seconds) == (2, 16, 30.0)
    assert float(tr.pl_mean) > 0
    s = tr.train(max_steps=2)
    assert not s["stopped_on_nan"] and tr.nimg == 16 + 24
    with pytest.raises(ValueError, match="architecture"):
        native_train_config(folder, {"channel_max": 32})


def test_compile_mode_is_checked_before_anything_runs():
    with pytest.raises(ValueError, match="compile_mode must be one of .*reduce-overhead"):
        TrainConfig(**{**TINY, "fast": True, "compile_mode": "fastest"})


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_fast_step_matches_eager_on_cuda(mode):
    """On CUDA the compiled phases (also replayed as CUDA graphs) give the eager phases' losses on
    the same draws (bf16 autocast: within 2e-2 relative), and a few compiled steps stay finite."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    tr = Trainer(TrainConfig(**{**TINY, "fast": True, "batch": 16, "compile_mode": mode}), _images(), "cuda")
    fs = tr.fast_step
    assert fs.compiled and fs.graphs == (mode == "reduce-overhead")
    d = fs.draws(16)
    args = (d.z, d.z2, d.cut, d.noise, d.aug)
    compiled = float(fs._g_main(*args))
    eager = float(fs._g_main_impl(*args))
    assert abs(compiled - eager) < 2e-2 * max(1.0, abs(eager)), (compiled, eager)
    s = tr.train(max_steps=4)
    assert not s["stopped_on_nan"]


def test_holdout_is_kept_out_of_training_and_gap_is_logged():
    imgs = _images(24)
    tr = Trainer(TrainConfig(**{**TINY, "holdout": 6, "gsnr_every": 2, "gsnr_samples": 4}), imgs, "cpu")
    assert len(tr.images) == 18 and len(tr.heldout) == 6
    flat = lambda t: {tuple(x.flatten().tolist()) for x in t.cpu()}  # noqa: E731
    assert flat(tr.images) | flat(tr.heldout) == flat(imgs) and not flat(tr.images) & flat(tr.heldout)
    again = Trainer(TrainConfig(**{**TINY, "holdout": 6}), imgs, "cpu")
    assert torch.equal(again.heldout, tr.heldout)  # the same subset on every resume
    tr.train(max_steps=2)
    gap = {r["group"]: float(r["gsnr"]) for r in tr.gsnr_rows if r["net"] == "D" and r["group"] in
           ("logit_train", "logit_heldout", "gap")}
    assert gap["gap"] == pytest.approx(gap["logit_train"] - gap["logit_heldout"], abs=1e-5)
    with pytest.raises(ValueError, match="holdout"):
        Trainer(TrainConfig(**{**TINY, "holdout": 20}), imgs, "cpu")


def test_kid_against_held_out_faces_is_logged_and_survives_a_resume(tmp_path):
    """``kid_every`` measures KID-attr of G_ema against the held-out images into ``kid.csv``; a
    resumed run reads the curve back and appends; without held-out images it is refused."""
    with pytest.raises(ValueError, match="kid_every needs held-out"):
        TrainConfig(**{**TINY, "kid_every": 2})
    cfg = {**TINY, "holdout": 8, "kid_every": 2, "kid_samples": 16}
    tr = Trainer(TrainConfig(**cfg), _images(24), "cpu", run_dir=tmp_path)
    tr.train(max_steps=4)
    rows = list(csv.DictReader(open(tmp_path / "kid.csv")))
    assert [int(r["step"]) for r in rows] == [2, 4]
    for r in rows:
        assert int(r["n"]) == 8 and math.isfinite(float(r["kid"])) and float(r["ci_low"]) <= float(r["ci_high"])
    again = Trainer(TrainConfig(**cfg), _images(24), "cpu", run_dir=tmp_path)
    again.load_checkpoint(tmp_path / "checkpoint.safetensors")
    again.load_logs()
    again.train(max_steps=2)
    assert [int(r["step"]) for r in csv.DictReader(open(tmp_path / "kid.csv"))] == [2, 4, 6]
