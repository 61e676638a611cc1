"""The projector's fast CUDA step paths (fused Adam, foreach noise re-normalisation, the
whole-step CUDA graph), checked on the CPU against the reference loop where they can run here."""
import pytest
import torch

from faceedit.inversion.hybrid import _FromCodes
from faceedit.inversion.losses import normalize_noise_
from faceedit.inversion.projector import InversionOptions, Projector, _normalize_noise_foreach_, graph_summary
from faceedit.networks import Generator


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    G = Generator(z_dim=16, w_dim=16, resolution=16, channel_base=128, channel_max=16, mapping_layers=2).eval()
    with torch.no_grad():
        G.mapping.w_avg.copy_(G.mapping(G.sample_z(2000, seed=1)).mean((0, 1)))
    return G


def _target(G, n=2):
    with torch.no_grad():
        return G.synthesis(G.mapping(G.sample_z(n, seed=3)))


def test_graph_modes_need_cuda_and_name_the_fix(G):
    with pytest.raises(ValueError, match="cuda_graphs=False"):
        Projector(G, InversionOptions(space="w+", cuda_graphs=True, perceptual="none"))
    with pytest.raises(ValueError, match="reduce-overhead.*CUDA"):
        Projector(G, InversionOptions(space="w+", compile="reduce-overhead", perceptual="none"))
    with pytest.raises(ValueError, match="compile must be"):
        Projector(G, InversionOptions(space="w+", compile="max-speed", perceptual="none"))


def test_foreach_renormalisation_matches_the_reference():
    g = torch.Generator().manual_seed(0)
    maps = [torch.randn(3, 1, r, r, generator=g) * s + m for r, s, m in ((4, 2.0, 1.0), (8, 0.5, -3.0), (32, 7.0, 0.2))]
    maps.append(torch.full((3, 1, 8, 8), 2.5))  # constant map: the variance floor, no NaN
    a = [m.clone() for m in maps]
    b = [m.clone() for m in maps]
    normalize_noise_(a)
    _normalize_noise_foreach_(b)
    for x, y in zip(a, b):
        assert torch.allclose(x, y, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(b[-1]).all() and b[-1].abs().max() == 0
    _normalize_noise_foreach_([])  # nothing to do


def _run(G, target, **attrs):
    p = Projector(G, InversionOptions(space="w+", steps=12, optimize_noise=True, noise_ramp=0.5, seed=7,
                                      perceptual="none"))
    for k, v in attrs.items():
        setattr(p, k, v)
    seen = []
    r = p.project(target, callback=lambda s, losses: seen.append((s, float(losses["total"].sum()))))
    return r, seen


@pytest.mark.parametrize("attrs", [{"_fast_step": True}, {"_static_loop": True}])
def test_fast_step_paths_follow_the_reference_loop(G, attrs, monkeypatch):
    """Fused Adam + foreach re-normalisation (CUDA's eager path) and the step function the
    CUDA graph captures (run here without capture: static lr/noise buffers, capturable fused
    Adam with a tensor learning rate) give the reference loop's result up to rounding."""
    import faceedit.inversion.projector as mod

    target = _target(G)
    ref, seen_ref = _run(G, target)
    calls = {"renorm": 0, "static": 0}
    renorm, static = mod._normalize_noise_foreach_, Projector._loop_static

    def spy_renorm(noises):
        calls["renorm"] += 1
        renorm(noises)

    def spy_static(self, *a, **k):
        calls["static"] += 1
        return static(self, *a, **k)

    monkeypatch.setattr(mod, "_normalize_noise_foreach_", spy_renorm)
    monkeypatch.setattr(Projector, "_loop_static", spy_static)
    new, seen_new = _run(G, target, **attrs)
    assert calls == {"renorm": 12, "static": int("_static_loop" in attrs)}  # the path under test ran
    assert new.steps == ref.steps == 12 and [s for s, _ in seen_new] == list(range(12))
    assert torch.allclose(new.ws, ref.ws, atol=2e-4, rtol=1e-4)
    for a, b in zip(new.noise, ref.noise):
        assert torch.allclose(a, b, atol=2e-3, rtol=1e-3)
    assert new.history == pytest.approx(ref.history, rel=1e-3, abs=1e-5)
    assert [v for _, v in seen_new] == pytest.approx([v for _, v in seen_ref], rel=1e-3, abs=1e-5)
    assert new.losses["total"] == pytest.approx(ref.losses["total"], rel=1e-3)
    assert ref.history[-1] < ref.history[0]  # the runs optimise something


def test_static_loop_early_stop_and_latent_noise(G):
    target = _target(G, n=1)
    kw = dict(steps=400, patience=3, min_delta=1e-3, noise_ramp=0.01, lr=1e-7)
    ref = Projector(G, InversionOptions(space="w", **kw, perceptual="none")).project(target)
    p = Projector(G, InversionOptions(space="w", **kw, perceptual="none"))
    p._static_loop = True
    new = p.project(target)
    assert new.steps == ref.steps <= 4 + 3 + 1
    # latent noise is drawn from the same seeded stream as the reference loop's torch.randn
    opts = InversionOptions(space="w+", steps=6, noise_ramp=1.0, noise_factor=5.0, lr=0.0, perceptual="none")
    a = Projector(G, opts).project(target)
    p = Projector(G, opts)
    p._static_loop = True
    b = p.project(target)
    assert b.history == pytest.approx(a.history, rel=1e-5)
    assert len(set(round(h, 6) for h in a.history)) > 1  # the noise did change the loss


def test_eager_adam_is_torch_adam_bit_for_bit():
    """EagerAdam (the CPU's optimiser, free of torch.optim's torch._dynamo import) against
    torch.optim.Adam: the same parameters, exactly, over steps with a changing learning rate, a
    parameter whose gradient is missing on some steps, and non-contiguous gradients."""
    from faceedit.inversion.projector import EagerAdam

    g = torch.Generator().manual_seed(0)
    start = [torch.randn(3, 5, generator=g), torch.randn(2, 1, 4, 4, generator=g) * 3]
    runs = []
    for make in (lambda ps: torch.optim.Adam(ps, lr=0.3, betas=(0.9, 0.999)), lambda ps: EagerAdam(ps, lr=0.3)):
        ps = [t.clone().requires_grad_(True) for t in start]
        opt = make(ps)
        grads = torch.Generator().manual_seed(1)
        for step in range(15):
            opt.param_groups[0]["lr"] = 0.3 * (1 - step / 15) + 1e-3
            opt.zero_grad(set_to_none=True)
            loss = (ps[0] ** 2).sum() * torch.rand((), generator=grads) + ps[0].abs().mean()
            if step % 4 != 3:  # the second tensor gets no gradient on every 4th step
                loss = loss + (ps[1].transpose(-1, -2) * torch.randn(2, 1, 4, 4, generator=grads)).sum()
            loss.backward()
            opt.step()
        runs.append([p.detach() for p in ps])
    for a, b in zip(*runs):
        assert torch.equal(a, b)
    assert not torch.equal(runs[0][0], start[0])  # it moved


def test_cpu_projection_with_eager_adam_equals_torch_adam(G):
    """The CPU loop's default optimiser (EagerAdam) gives torch.optim.Adam's projection exactly."""
    target = _target(G)
    ref, seen_ref = _run(G, target, _torch_adam=True)
    new, seen_new = _run(G, target)
    assert torch.equal(new.ws, ref.ws) and all(torch.equal(a, b) for a, b in zip(new.noise, ref.noise))
    assert seen_new == seen_ref and new.history == ref.history
    assert ref.history[-1] < ref.history[0]


@pytest.mark.gpu
def test_cuda_graph_step_matches_the_eager_loop_on_cuda(G):
    Gc = Generator(**G.config).eval().cuda()
    Gc.load_state_dict(G.state_dict())
    target = _target(G).cuda()
    kw = dict(steps=20, optimize_noise=True, seed=3)
    ref = Projector(Gc, InversionOptions(space="w+", **kw, perceptual="none")).project(target)
    seen = []
    new = Projector(Gc, InversionOptions(space="w+", cuda_graphs=True, **kw, perceptual="none")).project(
        target, callback=lambda s, _loss: seen.append(s))
    assert seen == list(range(20)) and new.steps == 20
    assert torch.allclose(new.ws, ref.ws, atol=1e-3, rtol=1e-3)
    assert new.history == pytest.approx(ref.history, rel=1e-3, abs=1e-5)


def test_projector_holds_the_prior_on_its_device_and_leaves_the_callers(G):
    """The penalty's tensors are moved once, before the loop (a per-step host copy cannot be
    captured in a CUDA graph); the caller's prior is not changed, and the penalty runs where the copy is."""
    from faceedit.inversion.prior import GaussianPrior, fit_prior, prior_on

    prior = GaussianPrior(fit_prior(G, 2000, check_n=0), G.num_ws, G.w_dim)
    view = prior_on(prior, "meta")
    assert view.mean.device.type == "meta" and view.whiten.device.type == "meta"
    assert prior.mean.device.type == "cpu" and prior.whiten.device.type == "cpu"
    assert prior_on(prior, "cpu") is prior and prior_on(None, "cpu") is None
    ws = G.mapping(G.sample_z(3, seed=2))
    assert view.penalty(ws.to("meta")).shape == (3,)  # the penalty runs where the view's tensors are
    proj = Projector(G, InversionOptions(space="w+", perceptual="none"), prior=prior)
    assert proj.prior.mean.device == proj.device


def test_benchmark_reports_a_failing_config_and_times_the_long_run_with_the_best(G):
    """bench/scripts/inversion.py: a config that cannot run (here cuda_graphs on the CPU) becomes an
    error row and the run goes on; the long one-photo run reuses the fastest batch-1 projector."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "bench_inversion_speed", Path(__file__).resolve().parents[1] / "bench" / "scripts" / "inversion.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cpu = torch.device("cpu")
    rows, kept, logged = [], {}, []
    configs = [("ours-poly-bf16-graphs", dict(path="poly", cuda_graphs=True)),
               ("ours-fp32", dict(path="shared")), ("nvidia-baseline", dict(path="reference", reference_step=True))]
    bench._rows_for(G, "tiny", cpu, (1,), configs, 3, 1, None, rows, logged.append, kept=kept)
    assert [r["config"] for r in rows] == ["ours-poly-bf16-graphs", "ours-fp32", "nvidia-baseline"]
    assert "cuda_graphs=False" in rows[0]["error"] and "error" not in rows[1] and "error" not in rows[2]
    assert rows[1]["ms_per_step"] > 0 and set(kept) == {"ours-fp32", "nvidia-baseline"}
    assert kept["nvidia-baseline"]["projector"]._fast_step is False
    long = bench.time_1000_steps(rows, kept, "tiny", cpu, G, None, logged.append, steps=7)
    assert len(long) == 1 and long[0]["config"] == "ours-fp32" and long[0]["what"].startswith("7-step")
    assert long[0]["seconds"] > 0 and long[0]["goal_met"] in (True, False) and logged[-1] is long[0]
    kept["ours-fp32"]["projector"] = None  # a broken projector: reported, no crash
    bad = bench.time_1000_steps(rows, kept, "tiny", cpu, G, None, logged.append, steps=7)
    assert len(bad) == 1 and "error" in bad[0]


# -- a failed capture falls back to the same step run eagerly; the graphed hybrid step on a GPU --
class _NoStream:
    """Stands in for torch.cuda's stream calls on the CPU: the warm-up steps run on the current thread."""

    def __init__(self, *a, **k):
        pass

    def wait_stream(self, other):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _projector(G, **kw):
    p = Projector(G, InversionOptions(space="w+", steps=10, optimize_noise=True, noise_ramp=0.5, seed=7,
                                      perceptual="none", **kw))
    p._static_loop = True
    return p


def test_failed_capture_continues_eagerly_with_the_same_numbers(G, monkeypatch):
    target = _target(G)
    ref_p = _projector(G)
    ref = ref_p.project(target)
    assert ref.graph == "off"
    calls = []

    def failing_capture(body, opt):
        calls.append(1)
        raise RuntimeError("CUDA graph capture of the projector step failed (stub)")

    p = _projector(G)
    p.cuda_graphs = True  # the CPU cannot capture: the CUDA calls are stubbed and the capture fails
    monkeypatch.setattr(torch.cuda, "Stream", _NoStream)
    monkeypatch.setattr(torch.cuda, "stream", _NoStream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda *a: _NoStream())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(Projector, "_capture", staticmethod(failing_capture))
    seen = []
    new = p.project(target, callback=lambda s, _losses: seen.append(s))
    assert calls == [1] and seen == list(range(10))  # tried once, at step GRAPH_WARMUP; every step ran
    assert new.graph.startswith("eager after a failed capture: CUDA graph capture") and "stub" in new.graph
    assert torch.equal(new.ws, ref.ws) and all(torch.equal(a, b) for a, b in zip(new.noise, ref.noise))
    assert new.history == ref.history
    p.graph_fallback = False
    with pytest.raises(RuntimeError, match="stub"):
        p.project(target)
    assert graph_summary([ref, ref]) == "off" and graph_summary([ref, new]).startswith("off; eager after")


def _hybrid_projector(Gc, codes, graphs: bool):
    p = Projector(Gc, InversionOptions(space="w+", steps=24, lr=0.3, noise_factor=0.0, seed=3, perceptual="none",
                                       cuda_graphs=graphs))
    p.space = _FromCodes(Gc, "w+", base=codes)
    return p


def _on_cuda(G):
    """The generator, two targets and two start codes on the GPU."""
    Gc = Generator(**G.config).eval().cuda()
    Gc.load_state_dict(G.state_dict())
    with torch.no_grad():
        codes = Gc.mapping(Gc.sample_z(2, seed=11).cuda())
    return Gc, _target(G).cuda(), codes


@pytest.mark.gpu
def test_graphed_hybrid_step_gives_the_eager_latent_on_cuda(G):
    """The hybrid's step (an offset from the encoder's codes, no latent noise) replayed from a CUDA
    graph ends within 1e-3 of the eager loop's codes (both fused Adam; the graph's Adam is the
    capturable one with a tensor learning rate, so the last bits may differ)."""
    Gc, target, codes = _on_cuda(G)
    ref = _hybrid_projector(Gc, codes, False).project(target)
    new = _hybrid_projector(Gc, codes, True).project(target)
    assert ref.graph == "off" and new.graph == "replayed"
    assert torch.allclose(new.ws, ref.ws, atol=1e-3, rtol=1e-3)
    assert not torch.allclose(new.ws, codes, atol=1e-3)  # it moved
    assert new.history == pytest.approx(ref.history, rel=1e-3, abs=1e-5)


@pytest.mark.gpu
def test_a_capture_error_on_cuda_falls_back_to_the_eager_step(G):
    Gc, target, codes = _on_cuda(G)
    ref = _hybrid_projector(Gc, codes, False).project(target)

    p = _hybrid_projector(Gc, codes, True)
    inner = p._loss_fn

    def loss_with_a_host_read(*args):
        out = inner(*args)
        if torch.cuda.is_current_stream_capturing():
            out["total"].sum().item()  # a host read: not allowed while a stream is capturing
        return out

    p._loss_fn = loss_with_a_host_read
    new = p.project(target)
    assert new.graph.startswith("eager after a failed capture")
    assert torch.allclose(new.ws, ref.ws, atol=1e-3, rtol=1e-3)
    again = _hybrid_projector(Gc, codes, True).project(target)  # the device still captures afterwards
    assert again.graph == "replayed" and torch.allclose(again.ws, ref.ws, atol=1e-3, rtol=1e-3)


@pytest.mark.gpu
def test_cuda_graph_step_with_the_prior_replays_and_matches_the_eager_loop(G):
    """The pipeline's hybrid step holds the Gaussianized prior; its capture failed on a host copy
    of the prior's tensors before the projector moved them to the device."""
    from faceedit.inversion.prior import GaussianPrior, fit_prior

    prior = GaussianPrior(fit_prior(G, 2000, check_n=0), G.num_ws, G.w_dim)
    Gc, target, _ = _on_cuda(G)
    kw = dict(space="w+", steps=20, seed=3, perceptual="none", prior_weight=1.0)
    ref = Projector(Gc, InversionOptions(**kw), prior=prior).project(target)
    new = Projector(Gc, InversionOptions(cuda_graphs=True, **kw), prior=prior).project(target)
    assert new.graph == "replayed"
    assert torch.allclose(new.ws, ref.ws, atol=1e-3, rtol=1e-3)


def _disc(G):
    from faceedit.networks import Discriminator

    torch.manual_seed(1)
    return Discriminator(resolution=G.resolution, channel_base=128, channel_max=16).eval()


def test_cpu_step_takes_the_polyphase_path_and_ends_at_the_reference_latent(G):
    """On the CPU a projector given no path runs ``poly`` (default_path); 12 steps of the hybrid's
    settings (offset from a code, lr 0.3, no latent noise, discriminator-feature loss) end at the
    latent the reference path (NVIDIA's grouped convs) reaches: codes within 2e-5 (2e-6 seen) of a
    run that moves them by about 2.7, losses and the loss history within 1e-4 relative."""
    from faceedit.inversion.projector import default_path

    D = _disc(G)
    target = _target(G, n=2)
    with torch.no_grad():
        base = G.mapping(G.sample_z(2, seed=11))

    def run(path):
        p = Projector(G, InversionOptions(space="w+", steps=12, lr=0.3, noise_factor=0.0, perceptual="disc",
                                          path=path), D=D)
        p.space = _FromCodes(G, "w+", base=base)
        return p, p.project(target)

    fast, a = run(None)
    assert fast.path == "poly" == default_path(G, "cpu") and default_path(G, "cuda") == "shared"
    _, ref = run("reference")
    moved = float((ref.ws - base).abs().max())
    assert 1 < moved < 10  # the steps move the codes
    assert float((a.ws - ref.ws).abs().max()) < 2e-5
    assert a.losses["total"] == pytest.approx(ref.losses["total"], rel=1e-4)
    assert a.history == pytest.approx(ref.history, rel=1e-4)


def test_default_path_leaves_poly_for_filters_it_cannot_run(G):
    """A generator whose resampling filter is not the 4-tap one takes ``shared`` on the CPU too."""
    import copy

    from faceedit.inversion.projector import default_path
    from faceedit.networks.ops import make_fir

    odd = copy.deepcopy(G)
    for m in odd.synthesis.modules():
        if isinstance(getattr(m, "fir", None), torch.Tensor):
            m.fir = make_fir((1, 5, 10, 10, 5, 1))
    assert default_path(G, "cpu") == "poly" and default_path(odd, "cpu") == "shared"
    opts = InversionOptions(space="w+", steps=2, perceptual="none")
    assert Projector(odd, opts).path == "shared" and Projector(G, opts.replace(path="reference")).path == "reference"


def test_hybrid_computes_the_targets_features_once_per_batch(G, monkeypatch):
    """The hybrid's encoder losses and its optimisation share one ``prepare`` of the targets (the
    discriminator's features of the faces), and the result is the one a second ``prepare`` gave."""
    from faceedit.inversion.hybrid import hybrid_invert
    from faceedit.inversion.losses import DiscFeatureLoss
    from faceedit.networks.encoder import Encoder

    D = _disc(G)
    torch.manual_seed(0)
    E = Encoder(16, G.num_ws, 16, "w+", channel_base=256, channel_max=32, channel_min=8, fpn_channels=16,
                head_channels=16)
    target = _target(G, n=3)
    kw = dict(G=G, D=D, encoder=E, prior="none", perceptual="disc", batch_size=2)
    calls = []
    prepare = DiscFeatureLoss.prepare

    def counting(self, t):
        calls.append(t.shape[0])
        return prepare(self, t)

    monkeypatch.setattr(DiscFeatureLoss, "prepare", counting)
    lat = hybrid_invert(target, None, "w+", 4, **kw)
    assert calls == [2, 1]  # two batches, one prepare each
    twice = []

    def prepare_again(self, target, *, callback=None, prepared=None):
        twice.append(prepared is not None)
        return project(self, target, callback=callback)  # computes the features itself

    project = Projector.project
    monkeypatch.setattr(Projector, "project", prepare_again)
    again = hybrid_invert(target, None, "w+", 4, **kw)
    assert twice == [True, True] and torch.equal(again.codes, lat.codes)


def _prior(G):
    from faceedit.inversion.prior import GaussianPrior, fit_prior

    return GaussianPrior(fit_prior(G, 2000, check_n=0), G.num_ws, G.w_dim)


def _encoder(G):
    from faceedit.networks.encoder import Encoder

    torch.manual_seed(0)
    return Encoder(16, G.num_ws, 16, "w+", channel_base=256, channel_max=32, channel_min=8, fpn_channels=16,
                   head_channels=16)


def test_cpu_step_losses_and_gradients_match_the_reference_path(G):
    """One step of the hybrid's objective (pixel MSE + discriminator features + the Gaussianized
    prior) at the same codes: every loss term and the gradient the optimiser takes agree between
    the CPU default (``poly``), ``shared`` and ``reference`` to float rounding (gradient within 1e-4
    relative, the terms within 1e-5), while the gradient is far from zero and from a nearby point's."""
    D, prior = _disc(G), _prior(G)
    target = _target(G, n=2)
    with torch.no_grad():
        base = G.mapping(G.sample_z(2, seed=5)) + 0.1 * torch.randn(2, G.num_ws, G.w_dim,
                                                                     generator=torch.Generator().manual_seed(2))
    out = {}
    for path in (None, "shared", "reference"):
        p = Projector(G, InversionOptions(space="w+", perceptual="disc", prior_weight=0.01, path=path),
                      D=D, prior=prior)
        ws = base.clone().requires_grad_(True)
        losses = p._losses(ws, target, p.perceptual.prepare(target), None)
        (grad,) = torch.autograd.grad(losses["total"].sum(), ws)
        out[p.path] = ({k: v.detach() for k, v in losses.items()}, grad)
    assert set(out) == {"poly", "shared", "reference"}
    ref_losses, ref_grad = out["reference"]
    assert {"mse", "perceptual", "prior", "total"} <= set(ref_losses)
    assert all(float(v.abs().min()) > 0 for v in ref_losses.values())
    for path in ("poly", "shared"):
        losses, grad = out[path]
        for k, v in ref_losses.items():
            assert torch.allclose(losses[k], v, rtol=1e-5, atol=1e-7), (path, k)
        assert float((grad - ref_grad).norm() / ref_grad.norm()) < 1e-4, path
    # the tolerance separates: the gradient at a point 1e-2 away differs by far more
    p = Projector(G, InversionOptions(space="w+", perceptual="disc", prior_weight=0.01), D=D, prior=prior)
    ws = (base + 1e-2).requires_grad_(True)
    (near,) = torch.autograd.grad(p._losses(ws, target, p.perceptual.prepare(target), None)["total"].sum(), ws)
    assert float((near - ref_grad).norm() / ref_grad.norm()) > 1e-2


def test_cpu_hybrid_on_its_default_path_ends_at_the_reference_paths_latent(G, monkeypatch):
    """The hybrid as ``faceedit edit`` runs it on the CPU (encoder start, discriminator features,
    the prior, no path named: ``poly``) ends where the same inversion on the reference path ends:
    the encoder's losses within 1e-5 relative (2e-7 seen), the final total loss within 1e-4 (2e-5
    seen), each term and the loss history within 5e-4 (1.6e-4 and 1.1e-4 seen).
    The codes, moved by about 1.6, agree within 5e-3 (9e-4 seen): no closer, because from step 7
    on the prior's kink at 0 and Adam's normalised steps amplify rounding (the reference path itself
    ends 9e-4 away when its start moves by 1e-6); the one-step test above is the tight check."""
    from faceedit.inversion.encoder import encode_tensor
    from faceedit.inversion.hybrid import hybrid_invert

    D, prior, E = _disc(G), _prior(G), _encoder(G)
    target = _target(G, n=2)
    paths = []
    project = Projector.project

    def spy(self, *a, **k):
        paths.append(self.path)
        return project(self, *a, **k)

    monkeypatch.setattr(Projector, "project", spy)
    kw = dict(G=G, D=D, encoder=E, prior=prior, perceptual="disc", seed=0)
    fast = hybrid_invert(target, None, "w+", 8, **kw)
    ref = hybrid_invert(target, None, "w+", 8, path="reference", **kw)
    assert paths == ["poly", "reference"]
    start = encode_tensor(E, target)
    assert float((ref.codes - start).abs().max()) > 1  # the steps move the codes
    assert float((fast.codes - ref.codes).abs().max()) < 5e-3
    assert fast.meta["losses"]["total"] == pytest.approx(ref.meta["losses"]["total"], rel=1e-4)
    for k in ("mse", "perceptual", "prior"):  # the terms trade a little against each other
        assert fast.meta["losses"][k] == pytest.approx(ref.meta["losses"][k], rel=5e-4), k
    for k, v in ref.meta["encoder_losses"].items():
        assert fast.meta["encoder_losses"][k] == pytest.approx(v, rel=1e-5), k
    assert fast.meta["history"] == pytest.approx(ref.meta["history"], rel=5e-4)


def test_cpu_default_path_follows_generator_weights_changed_in_place(G):
    """``poly`` keeps the frozen generator's kernels between calls; a generator whose weights are
    changed in place afterwards (loaded into, fine-tuned) is projected with its new weights: the
    result is the reference path's on the changed generator, not the earlier one's."""
    import copy

    G2 = copy.deepcopy(G)
    target = _target(G, n=1)
    opts = InversionOptions(space="w+", steps=4, perceptual="none", noise_factor=0.0)
    before = Projector(G2, opts).project(target)
    assert any(hasattr(m, "_poly_cache") for m in G2.synthesis.modules())  # the kernels were kept
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():  # not a rescaling: demodulation would undo it
        for m in G2.synthesis.modules():
            if hasattr(m, "_poly_cache"):
                m.weight.add_(0.5 * m.weight.std() * torch.randn(m.weight.shape, generator=g))
    after = Projector(G2, opts).project(target)
    ref = Projector(G2, opts.replace(path="reference")).project(target)
    assert float((after.ws - ref.ws).abs().max()) < 1e-4
    assert float((after.ws - before.ws).abs().max()) > 1e-2


def test_default_path_takes_poly_on_the_cpu_only_for_small_generators(G, monkeypatch):
    """``poly`` spends 4x the up-convs' multiply-adds: the CPU takes it up to
    ``POLY_CPU_MAX_UP_MACS`` of them (:func:`up_conv_macs`, counted by hand here), ``shared`` above."""
    import faceedit.inversion.projector as mod

    # up-convs of the 16 px toy: 4 -> 8 px (16 -> 16 channels), 8 -> 16 px (16 -> 8); 9 taps per input pixel
    assert mod.up_conv_macs(G) == 16 * 16 * 9 * 4 ** 2 + 8 * 16 * 9 * 8 ** 2
    assert mod.up_conv_macs(G) <= mod.POLY_CPU_MAX_UP_MACS
    monkeypatch.setattr(mod, "POLY_CPU_MAX_UP_MACS", mod.up_conv_macs(G))
    assert mod.default_path(G, "cpu") == "poly"
    monkeypatch.setattr(mod, "POLY_CPU_MAX_UP_MACS", mod.up_conv_macs(G) - 1)
    assert mod.default_path(G, "cpu") == "shared"
    assert Projector(G, InversionOptions(space="w+", steps=1, perceptual="none")).path == "shared"
