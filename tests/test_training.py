"""Training: the loop (losses, regularisers, EMA, resume), augmentation, export, data split."""
import json
import math
import zipfile

import numpy as np
import pytest
import torch

from faceedit.training import augment
from faceedit.training.loop import TrainConfig, Trainer, ema_beta, load_images, r1_penalty, update_ema

TINY = dict(resolution=16, z_dim=16, w_dim=16, mapping_layers=2, mapping_blocks=1, mapping_heads=2,
            channel_base=128, channel_max=16, batch=8, log_every=2, gsnr_every=0, r1_every=2, pl_every=2,
            profile_every=0)


def _images(n=24, res=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, res, res), dtype=torch.uint8, generator=g)


def _tiny_pack(path, n=24, side=32):
    import cv2

    from faceedit.core.pack import write_pack

    rng = np.random.default_rng(0)
    jpegs = [cv2.imencode(".jpg", (rng.random((side, side, 3)) * 255).astype(np.uint8))[1].tobytes()
             for _ in range(n)]
    write_pack(path, jpegs, {"source": np.ones(n, np.int8)}, [f"{i}.jpg" for i in range(n)],
               {"recipe": {"name": "faces64", "size": side}, "split": "train"})
    return path


@pytest.mark.parametrize("mapping", ["mlp", "transformer"])
def test_few_steps_finite_and_regularisers_run(mapping, tmp_path):
    cfg = TrainConfig(mapping=mapping, **TINY)
    tr = Trainer(cfg, _images(), "cpu", run_dir=tmp_path)
    before = {k: v.clone() for k, v in tr.G.state_dict().items()}
    s = tr.train(max_steps=4)
    assert s["steps"] == 4 and not s["stopped_on_nan"] and tr.nimg == 32
    rows = tr.loss_rows
    assert len(rows) == 2
    for r in rows:
        for k in ("loss_G", "loss_D", "r1", "pl", "D_real", "D_fake"):
            assert math.isfinite(float(r[k])), (k, r)
    assert float(rows[-1]["pl_mean"]) > 0  # path-length mean is tracked
    changed = [k for k, v in tr.G.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("mapping.") for k in changed) and any(k.startswith("synthesis.") for k in changed)
    assert tr.G.mapping.w_avg.abs().sum() > 0  # w_avg tracked during G steps
    assert torch.equal(tr.G_ema.mapping.w_avg, tr.G.mapping.w_avg)  # buffers copied to the EMA
    assert (tmp_path / "checkpoint.safetensors").is_file() and (tmp_path / "loss.csv").is_file()
    assert (tmp_path / "samples" / "latest.png").is_file()
    assert cfg.mixing_prob == (0.9 if mapping == "mlp" else 0.0)


def test_bf16_autocast_path_runs_on_cpu():
    cfg = TrainConfig(amp="bf16", **TINY)
    tr = Trainer(cfg, _images(), "cpu")
    assert tr.amp_dtype == torch.bfloat16
    tr.train(max_steps=2)
    assert all(torch.isfinite(p).all() for p in tr.G.parameters())


@pytest.mark.parametrize("arch", ["stylegan2", "stylegan1"])
def test_resume_from_checkpoint_is_bit_identical(arch, tmp_path):
    cfg = TrainConfig(**{**TINY, "arch": arch})
    imgs = _images()
    a = Trainer(cfg, imgs, "cpu", run_dir=tmp_path / "a")
    a.train(max_steps=6)
    b = Trainer(cfg, imgs, "cpu", run_dir=tmp_path / "b")
    b.train(max_steps=3)
    c = Trainer(cfg, imgs, "cpu", run_dir=tmp_path / "b")
    c.load_checkpoint(tmp_path / "b" / "checkpoint.safetensors")
    c.load_logs()
    assert c.step_count == 3 and c.nimg == 24
    assert type(c.G).__name__ == {"stylegan2": "Generator", "stylegan1": "Generator1"}[arch]
    c.train(max_steps=3)
    ta, tc = a.state_tensors(), c.state_tensors()
    assert set(ta) == set(tc)
    assert any(k.startswith("optD.") for k in ta) and "pl_mean" in ta
    diff = [k for k in ta if not torch.equal(ta[k], tc[k])]
    assert diff == []
    assert [r["step"] for r in c.loss_rows] == [2, 4, 6] or len(c.loss_rows) >= 3


def test_ema_math():
    # half-life: after ema_kimg * 1000 images at a fixed G, half of the gap remains
    b = ema_beta(batch=10, cur_nimg=10 ** 9, ema_kimg=1.0, rampup=None)
    assert b ** 100 == pytest.approx(0.5)
    # ramp-up: half-life at most rampup * images seen
    assert ema_beta(10, 1000, 10.0, 0.05) == pytest.approx(0.5 ** (10 / 50))
    G = torch.nn.Linear(3, 2)
    E = torch.nn.Linear(3, 2)
    with torch.no_grad():
        E.weight.zero_()
        E.bias.zero_()
    update_ema(E, G, 0.75)
    torch.testing.assert_close(E.weight, 0.25 * G.weight.detach())
    torch.testing.assert_close(E.bias, 0.25 * G.bias.detach())


def test_r1_on_known_functions():
    class Quad(torch.nn.Module):  # D(x) = 0.5 |x|^2 -> grad x, R1 = |x|^2
        def forward(self, x):
            return 0.5 * x.square().sum(dim=[1, 2, 3]).unsqueeze(1)

    class Lin(torch.nn.Module):  # D(x) = <a, x> -> R1 = |a|^2 for every image
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Parameter(torch.randn(1, 3, 4, 4))

        def forward(self, x):
            return (x * self.a).sum(dim=[1, 2, 3]).unsqueeze(1)

    x = torch.randn(5, 3, 4, 4)
    r1, _ = r1_penalty(Quad(), x)
    torch.testing.assert_close(r1, x.square().sum(dim=[1, 2, 3]))
    lin = Lin()
    r1, _ = r1_penalty(lin, x)
    torch.testing.assert_close(r1, lin.a.detach().square().sum().expand(5))
    # the penalty is differentiable in D's parameters: d(|a|^2)/da = 2a
    (g,) = torch.autograd.grad(r1.mean(), lin.a)
    torch.testing.assert_close(g, 2 * lin.a.detach())
    # through a colour-only augmentation with brightness/contrast the gradient scales by contrast * saturation
    p = {"brightness": torch.zeros(5), "saturation": torch.ones(5), "contrast": torch.full((5,), 1.0)}
    r1a, _ = r1_penalty(lin, x, lambda t: augment.apply(t, p))
    torch.testing.assert_close(r1a, r1)


def test_lazy_adam_correction():
    tr = Trainer(TrainConfig(**{**TINY, "r1_every": 16, "pl_every": 4}), _images(), "cpu")
    gG, gD = tr.optG.param_groups[0], tr.optD.param_groups[0]
    assert gG["lr"] == pytest.approx(0.002 * 4 / 5) and gG["betas"][1] == pytest.approx(0.99 ** (4 / 5))
    assert gD["lr"] == pytest.approx(0.002 * 16 / 17) and gD["betas"] == (0.0, pytest.approx(0.99 ** (16 / 17)))


def test_style_mixing_only_for_mlp():
    for mapping, expect_mix in (("mlp", True), ("transformer", False)):
        cfg = TrainConfig(mapping=mapping, style_mixing=1.0 if mapping == "mlp" else None, **TINY)
        tr = Trainer(cfg, _images(), "cpu")
        torch.manual_seed(7)
        ws = tr.mapping(tr.G, 8)
        torch.manual_seed(7)
        plain = tr.G.mapping(torch.randn((8, *tr.G.z_shape)))
        if expect_mix:  # every sample switches codes at some layer >= 1
            assert not torch.allclose(ws, plain)
            assert torch.allclose(ws[:, 0], plain[:, 0])
            assert all(not torch.allclose(ws[i, -1], plain[i, -1]) for i in range(8))
        else:
            torch.testing.assert_close(ws, plain)


def test_augment_translation_cutout_and_vmap():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    p = {"shift_x": torch.tensor([1, 0]), "shift_y": torch.tensor([0, -2])}
    y = augment.apply(x, p)
    torch.testing.assert_close(y[0, :, :, 1:], x[0, :, :, :-1])
    assert (y[0, :, :, 0] == 0).all()
    torch.testing.assert_close(y[1, :, :-2], x[1, :, 2:])
    assert (y[1, :, -2:] == 0).all()
    q = {"cut_x": torch.tensor([-2, 3]), "cut_y": torch.tensor([1, 5]), "cut_size": torch.tensor([4, 4])}
    c = augment.apply(torch.ones(2, 1, 8, 8), q)
    assert c[0].sum() == 64 - 2 * 4 and c[1].sum() == 64 - 4 * 3
    # per-sample application under vmap equals the batched call
    torch.manual_seed(0)
    imgs = torch.randn(6, 3, 16, 16)
    params = augment.sample_params(6, 16)
    batched = augment.apply(imgs, params)
    per = torch.func.vmap(lambda im, pp: augment.apply(im[None], {k: v[None] for k, v in pp.items()})[0])(imgs, params)
    torch.testing.assert_close(per, batched)
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment.parse_policy("color,blur")


def test_load_images_downsamples_and_checks(tmp_path):
    pack = _tiny_pack(tmp_path / "p.npz", n=5, side=32)
    assert load_images(pack, 32).shape == (5, 3, 32, 32)
    assert load_images(pack, 16).shape == (5, 3, 16, 16)
    with pytest.raises(ValueError, match="resolution must divide"):
        load_images(pack, 64)
    with pytest.raises(FileNotFoundError, match="dataset build"):
        load_images(tmp_path / "missing.npz")


@pytest.mark.slow
def test_job_exports_resumes_on_fresh_machine_and_unpacks(tmp_path):
    from faceedit.checkpoints import load_native
    from faceedit.training import export, job

    pack = _tiny_pack(tmp_path / "train.npz", n=16, side=32)
    ov = job.parse_overrides([f"{k}={v}" for k, v in TINY.items() if k != "resolution"] + ["resolution=16",
                                                                                           "gsnr_every=2",
                                                                                           "gsnr_samples=4"])
    s = job.run_job(data=pack, mapping="mlp", run_dir=tmp_path / "run", minutes=5, export=tmp_path / "out",
                    device="cpu", max_steps=4, overrides=ov)
    assert s["steps"] == 4 and s["export_mib"]["zip"] < 16
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["faces64.disc.safetensors", "faces64.resume.safetensors", "faces64.zip"]
    with zipfile.ZipFile(tmp_path / "out" / "faces64.zip") as z:
        assert {"config.json", "model.safetensors", "loss.csv", "gsnr.csv", "samples.png",
                "train.json"} <= set(z.namelist())
        cfg = json.loads(z.read("config.json"))
    assert cfg["name"] == "faces64" and "non-commercial" in cfg["license"]
    assert cfg["provenance"]["steps"] == 4 and cfg["recipe"]["name"] == "faces64"
    m = load_native(tmp_path / "out" / "faces64.zip")  # the zip loads as a native checkpoint
    assert m.G.resolution == 16
    # fresh machine: empty run dir, resume from the export; continues the counters
    s2 = job.run_job(data=pack, mapping="mlp", run_dir=tmp_path / "run2", minutes=5, export=tmp_path / "out2",
                     resume_from=tmp_path / "out", device="cpu", max_steps=2)
    assert s2["source"].startswith("export") and s2["total_steps"] == 6
    rows = (tmp_path / "run2" / "loss.csv").read_text().splitlines()
    assert rows[1].startswith("2,") and rows[-1].startswith("6,")  # history carried over
    # the resumed G_ema equals the exported fp16 weights before training continued
    tr = Trainer(export.read_export_config(tmp_path / "out", "faces64"), load_images(pack, 16), "cpu")
    export.resume_from_export(tr, tmp_path / "out", "faces64")
    for k, v in m.G.state_dict().items():
        torch.testing.assert_close(tr.G_ema.state_dict()[k], v)
    with pytest.raises(ValueError, match="mapping"):
        job.run_job(data=pack, mapping="transformer", run_dir=tmp_path / "run", minutes=5, device="cpu",
                    max_steps=1, name="faces64")
    from click.testing import CliRunner

    from faceedit.cli import cli

    r = CliRunner().invoke(cli, ["unpack-export", str(tmp_path / "out2"), str(tmp_path / "weights"), "faces64",
                                 "faces64-wpp"])
    assert r.exit_code == 0, r.output
    assert "skip faces64-wpp" in r.output and f"faces64 -> {tmp_path / 'weights' / 'faces64'}" in r.output
    full = load_native(tmp_path / "weights" / "faces64", with_discriminator=True)
    assert full.D is not None and full.config["provenance"]["steps"] == 6


def test_split_rules_on_real_names(shared_dir):
    from faceedit.training.dataset import list_sources

    src = list_sources(f"{shared_dir}/datasets")
    test_names = {r["name"] for r in src["test"]}
    train_names = {r["name"] for r in src["train"]}
    assert not test_names & train_names
    cel_test = sorted(n for n in test_names if n.startswith("celeba10k/"))
    assert len(cel_test) == 1000 and cel_test[0] == "celeba10k/009001.jpg" and cel_test[-1] == "celeba10k/010000.jpg"
    assert sum(n.startswith("celeba10k/") for n in train_names) == 9000
    utk_test = sorted(n for n in test_names if n.startswith("utkface/"))
    assert "utkface/100_0_0_20170112213500903.jpg.chip.jpg" in utk_test
    # 1186 test positions; the malformed names that fall on a test position are left out
    bad_test = sum(m["split"] == "test" for m in src["malformed"])
    assert len(utk_test) == 1186 - bad_test and len(src["malformed"]) == 5
    assert len(utk_test) + sum(n.startswith("utkface/") for n in train_names) + 5 == 23707
    r = next(r for r in src["train"] if r["name"].startswith("utkface/"))
    assert r["age"] == float(r["name"].split("/")[1].split("_")[0])


@pytest.mark.slow
def test_build_small_real_pack_keeps_test_out(shared_dir, tmp_path):
    from faceedit.core.pack import Pack
    from faceedit.training.dataset import build_dataset, list_sources

    stats = build_dataset(tmp_path, f"{shared_dir}/datasets", workers=1, limit=8, max_mib=1, cache=tmp_path / "c")
    train, test = Pack(tmp_path / "faces64_train.npz"), Pack(tmp_path / "faces64_test.npz")
    src = list_sources(f"{shared_dir}/datasets")
    test_names = {r["name"] for r in src["test"]}
    assert len(train) >= 6 and len(test) >= 6
    assert not set(map(str, train.names)) & test_names
    assert set(map(str, test.names)) <= test_names
    assert train.image(0).shape == (64, 64, 3) and train.meta["recipe"]["name"] == "faces64"
    assert train.meta["jpeg_quality"] == stats["jpeg_quality"] == test.meta["jpeg_quality"]
    utk = train.labels["source"] == 1
    assert np.all(train.labels["race"][utk] >= 0) and np.all(np.isnan(train.labels["age"][~utk]))
    assert np.all(np.isin(train.labels["Smiling"][~utk], [-1, 1])) and np.all(train.labels["Smiling"][utk] == 0)
    assert (tmp_path / "faces64_contact.png").is_file() and (tmp_path / "faces64_stats.md").is_file()
    # a re-pack reuses the cached crops: no alignment, the same faces
    first = train.images()
    import faceedit.training.dataset as ds

    calls = []
    orig = ds.align_records
    ds.align_records = lambda *a, **k: calls.append(1) or orig(*a, **k)
    try:
        again_stats = build_dataset(tmp_path / "b", f"{shared_dir}/datasets", workers=1, limit=8, max_mib=1,
                                    cache=tmp_path / "c")
    finally:
        ds.align_records = orig
    assert calls == [] and again_stats["splits"]["train"]["aligned"] == stats["splits"]["train"]["aligned"]
    again = Pack(tmp_path / "b" / "faces64_train.npz")
    assert list(again.names) == list(train.names)
    assert np.array_equal(again.images(), first)


def test_default_architecture_fits_the_budgets():
    """One 64 px G forward <= 1 GFLOP (torch's counter: 2 per multiply-add); each exported
    file <= 16 MiB in fp16; both models' exports together well under the 64 MiB return."""
    from torch.utils.flop_counter import FlopCounterMode

    from faceedit.networks import Discriminator, Generator

    cfg = TrainConfig()
    assert (cfg.resolution, cfg.z_dim, cfg.w_dim, cfg.channel_base, cfg.channel_max) == (64, 256, 256, 2048, 256)
    D = Discriminator(**cfg.discriminator_kwargs())
    fp16 = lambda m: sum(v.numel() * 2 for v in m.state_dict().values()) / 2 ** 20  # noqa: E731
    total = 0.0
    for mapping in ("mlp", "transformer"):
        G = Generator(**TrainConfig(mapping=mapping).generator_kwargs())
        assert (G.mapping_kind, G.num_ws) == (mapping, 10)
        with FlopCounterMode(display=False) as fc:
            G.synthesis(G.mapping(G.sample_z(1, seed=0)), path="shared")
        assert fc.get_total_flops() <= 1e9
        assert fp16(G) < 15.5 and fp16(D) < 15.5
        total += 2 * fp16(G) + fp16(D)
    assert total < 56


# -- StyleGAN v1 through the same loop ---------------------------------------------------------
SG1 = dict(TINY, arch="stylegan1")


def _with_noise_and_bias(tr):
    """Non-zero noise strengths and synthesis biases, so that the noise draws matter."""
    with torch.no_grad():
        for name, p in tr.G.named_parameters():
            if name.endswith("noise_strength") or (name.endswith("bias") and "synthesis" in name):
                p.copy_(torch.randn_like(p) * 0.3)
    return tr


def test_sg1_config_builds_a_v1_generator_with_its_losses():
    from faceedit.networks import Discriminator, Generator1

    cfg = TrainConfig(**SG1)
    assert (cfg.pl_weight, cfg.mixing_prob) == (0.0, 0.9)  # SG1 has no path-length penalty; mixing 0.9
    assert TrainConfig(**TINY).pl_weight == 2.0 and TrainConfig(**{**SG1, "pl_weight": 1.5}).pl_weight == 1.5
    assert TrainConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "arch"}).arch == "stylegan2"
    tr = Trainer(cfg, _images(), "cpu")
    assert type(tr.G) is Generator1 and type(tr.G_ema) is Generator1 and type(tr.D) is Discriminator
    assert (tr.G.synthesis.channels, tr.G.config["mapping_layers"]) == ({4: 16, 8: 16, 16: 8}, 2)
    # no path-length phase: G's Adam is uncorrected, D's carries the lazy-R1 correction
    assert tr.optG.param_groups[0]["lr"] == pytest.approx(0.002)
    assert tr.optD.param_groups[0]["lr"] == pytest.approx(0.002 * 2 / 3)
    with pytest.raises(ValueError, match="MLP mapping only"):
        TrainConfig(**{**SG1, "mapping": "transformer"})
    with pytest.raises(ValueError, match="arch must be one of stylegan2, stylegan1"):
        TrainConfig(**{**TINY, "arch": "stylegan3"})


def test_sg1_few_steps_are_finite_and_train_both_networks(tmp_path):
    cfg = TrainConfig(**{**SG1, "gsnr_every": 2, "gsnr_samples": 4})
    tr = Trainer(cfg, _images(), "cpu", run_dir=tmp_path)
    g0 = {k: v.clone() for k, v in tr.G.state_dict().items()}
    d0 = {k: v.clone() for k, v in tr.D.state_dict().items()}
    s = tr.train(max_steps=4)
    assert s["steps"] == 4 and not s["stopped_on_nan"]
    for r in tr.loss_rows:
        for k in ("loss_G", "loss_D", "r1", "D_real", "D_fake"):
            assert math.isfinite(float(r[k])), (k, r)
        assert r["pl"] == "" and r["pl_mean"] == ""  # the path-length phase never ran
    changed = {k for k, v in tr.G.state_dict().items() if not torch.equal(v, g0[k])}
    assert any(k.startswith("mapping.net.") for k in changed)
    assert {"synthesis.const", "synthesis.layers.5.weight", "synthesis.layers.5.affine.weight",
            "synthesis.torgb.weight"} <= changed
    assert any(not torch.equal(v, d0[k]) for k, v in tr.D.state_dict().items())
    assert tr.G.mapping.w_avg.abs().sum() > 0 and torch.equal(tr.G_ema.mapping.w_avg, tr.G.mapping.w_avg)
    assert float(tr.pl_mean) == 0.0
    groups = {r["group"] for r in tr.gsnr_rows if r["net"] == "G"}
    assert {"mapping", "syn4", "syn8", "syn16"} <= groups  # v1 layers grouped by resolution


def test_sg1_fast_step_replays_the_reference_step():
    """The fast step runs a v1 generator: its G-main loss on explicit draws equals the reference
    step's code seeded alike (the 'poly' path is the one v1 path), and fast steps stay finite."""
    from faceedit.training.faststep import draw_fakes, g_main_loss

    tr = _with_noise_and_bias(Trainer(TrainConfig(**{**SG1, "fast": True}), _images(), "cpu"))
    assert tr.fast_step is not None and not tr.fast_step.compiled
    G, D = tr.G, tr.D
    torch.manual_seed(5)
    fake, _ = tr.generate(G, 8)
    ref = torch.nn.functional.softplus(-D(tr.aug(fake))).mean()
    torch.manual_seed(5)
    ours = g_main_loss(G, D, draw_fakes(G, 8, tr.cfg.mixing_prob, tr.aug.policy, "cpu"), path="poly")
    assert torch.equal(ours, ref)
    torch.manual_seed(6)
    assert not torch.equal(g_main_loss(G, D, draw_fakes(G, 8, 0.9, tr.aug.policy, "cpu"), path="poly"), ref)
    s = tr.train(max_steps=2)
    assert not s["stopped_on_nan"] and all(torch.isfinite(p).all() for p in tr.G.parameters())


def _sg1_job(tmp_path, **kw):
    from faceedit.training import job

    pack = _tiny_pack(tmp_path / "train.npz", n=16, side=32)
    ov = {**{k: v for k, v in TINY.items() if k != "resolution"}, "resolution": 16, "arch": "stylegan1"}
    s = job.run_job(data=pack, mapping="mlp", run_dir=tmp_path / "run", minutes=5, export=tmp_path / "out",
                    device="cpu", max_steps=2, overrides=ov, **kw)
    return pack, s


def test_sg1_job_exports_a_native_v1_model_that_loads_and_inverts(tmp_path):
    """run_job(overrides=dict(arch='stylegan1')) exports faces64-sg1.*: config.json records the
    arch, load_model gives a Generator1 whose images are bit-identical to the trained G_ema
    (fp16, as exported), and W / W+ inversion runs on it."""
    import copy as _copy

    from faceedit import invert
    from faceedit.checkpoints import load_model
    from faceedit.networks import Generator1
    from faceedit.training import export

    pack, s = _sg1_job(tmp_path)
    assert s["name"] == "faces64-sg1" and s["arch"] == "stylegan1" and s["config"]["pl_weight"] == 0.0
    zpath = tmp_path / "out" / "faces64-sg1.zip"
    with zipfile.ZipFile(zpath) as z:
        cfg = json.loads(z.read("config.json"))
        assert json.loads(z.read("train.json"))["config"]["arch"] == "stylegan1"
    assert cfg["generator"]["arch"] == "stylegan1" and cfg["provenance"]["training"]["pl_weight"] == 0.0
    m = load_model(zpath)
    assert type(m.G) is Generator1 and m.arch == "stylegan1"
    # the trained G_ema, rounded to fp16 as the export stores it
    tr = Trainer(export.read_export_config(tmp_path / "out", "faces64-sg1"), load_images(pack, 16), "cpu")
    export.resume_from_export(tr, tmp_path / "out", "faces64-sg1")
    ref = _copy.deepcopy(tr.G_ema)
    z = m.G.sample_z(3, seed=2)
    assert torch.equal(m.G(z), ref(z))
    folder = export.unpack(tmp_path / "out", "faces64-sg1", tmp_path / "weights")
    assert torch.equal(load_model(folder).G(z), ref(z))
    with torch.no_grad():
        target = m.G(m.G.sample_z(1, seed=9))
    for space in ("w", "w+"):
        lat = invert(target, model=str(folder), space=space, steps=4, prior="none", perceptual="none",
                     device="cpu", seed=0)
        assert lat.arch == "stylegan1" and lat.codes.shape == (1, 6, 16)
        assert lat.meta["history"][-1] < lat.meta["history"][0]


def test_sg1_job_resumes_and_refuses_the_other_arch(tmp_path):
    from faceedit.checkpoints.native import save_native
    from faceedit.training import job
    from faceedit.training.export import init_from_native, native_train_config, unpack

    pack, _ = _sg1_job(tmp_path)
    # a fresh machine continues from the export, as stylegan1, counters carried
    s2 = job.run_job(data=pack, mapping="mlp", run_dir=tmp_path / "run2", minutes=5, resume_from=tmp_path / "out",
                     device="cpu", max_steps=1, overrides={"arch": "stylegan1"})
    assert s2["source"].startswith("export") and s2["arch"] == "stylegan1" and s2["total_steps"] == 3
    # the run folder holds a stylegan1 state: asking for stylegan2 there is refused, not ignored
    with pytest.raises(ValueError, match=r"holds a stylegan1 run, not stylegan2; use another --run-dir or "
                                         r"--arch stylegan1"):
        job.run_job(data=pack, mapping="mlp", run_dir=tmp_path / "run", minutes=5, device="cpu", max_steps=1,
                    name="faces64-sg1", overrides={"arch": "stylegan2"})
    folder = unpack(tmp_path / "out", "faces64-sg1", tmp_path / "w")
    # a native v1 folder continues as v1 (init_from); as stylegan2 it is refused by name
    cfg = native_train_config(folder, {"batch": 8})
    assert (cfg.arch, cfg.pl_weight, cfg.z_dim) == ("stylegan1", 0.0, 16)
    tr = Trainer(cfg, load_images(pack, 16), "cpu")
    init_from_native(tr, folder)
    assert tr.step_count == 2 and float(tr.pl_mean) == 0.0
    with pytest.raises(ValueError, match="holds a stylegan1 generator; it cannot be continued as stylegan2"):
        native_train_config(folder, {"arch": "stylegan2"})
    sg2 = Trainer(TrainConfig(**TINY), load_images(pack, 16), "cpu")
    with pytest.raises(ValueError, match="holds a stylegan1 generator and this run trains a stylegan2 one"):
        init_from_native(sg2, folder)
    sg2_folder = save_native(tmp_path / "sg2", sg2.G_ema, name="m", D=sg2.D)
    with pytest.raises(ValueError, match="holds a stylegan2 generator; it cannot be continued as stylegan1"):
        native_train_config(sg2_folder, {"arch": "stylegan1"})
    with pytest.raises(ValueError, match="holds a stylegan2 generator and this run trains a stylegan1 one"):
        init_from_native(tr, sg2_folder)


def test_cli_train_arch_stylegan1(tmp_path):
    from click.testing import CliRunner

    from faceedit.cli import cli

    pack = _tiny_pack(tmp_path / "train.npz", n=12, side=16)
    sets = [a for k in ("z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max", "gsnr_every",
                        "profile_every", "r1_every") for a in ("--set", f"{k}={TINY[k]}")]
    r = CliRunner().invoke(cli, ["--device", "cpu", "train", "--arch", "stylegan1", "--data", str(pack),
                                 "--resolution", "16", "--batch", "8", "--max-steps", "1", "--run-dir",
                                 str(tmp_path / "run"), "--export", str(tmp_path / "out"), *sets])
    assert r.exit_code == 0, r.output
    assert [ln.split() for ln in r.output.splitlines()[:2]] == [["model", "faces64-sg1"], ["arch", "stylegan1"]]
    assert (tmp_path / "out" / "faces64-sg1.zip").is_file()
    r = CliRunner().invoke(cli, ["--device", "cpu", "train", "--arch", "stylegan1", "--mapping", "transformer",
                                 "--data", str(pack), "--resolution", "16", "--max-steps", "1",
                                 "--run-dir", str(tmp_path / "run3"), *sets])
    assert r.exit_code != 0 and "MLP mapping only" in r.output
