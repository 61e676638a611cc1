"""The projector's CUDA-graph step: a failed capture falls back to the same step run eagerly (checked on
the CPU with the CUDA stream calls stubbed), and on a GPU the graphed hybrid step gives the eager step's latent."""
import pytest
import torch

from faceedit.inversion.hybrid import _FromCodes
from faceedit.inversion.projector import InversionOptions, Projector, graph_summary
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


@pytest.mark.gpu
def test_graphed_hybrid_step_gives_the_eager_latent_on_cuda(G):
    """The hybrid's step (an offset from the encoder's codes, no latent noise) replayed from a CUDA
    graph ends within 1e-3 of the eager loop's codes (both fused Adam; the graph's Adam is the
    capturable one with a tensor learning rate, so the last bits may differ)."""
    Gc = Generator(**G.config).eval().cuda()
    Gc.load_state_dict(G.state_dict())
    target = _target(G).cuda()
    with torch.no_grad():
        codes = Gc.mapping(Gc.sample_z(2, seed=11).cuda())
    ref = _hybrid_projector(Gc, codes, False).project(target)
    new = _hybrid_projector(Gc, codes, True).project(target)
    assert ref.graph == "off" and new.graph == "replayed"
    assert torch.allclose(new.ws, ref.ws, atol=1e-3, rtol=1e-3)
    assert not torch.allclose(new.ws, codes, atol=1e-3)  # it moved
    assert new.history == pytest.approx(ref.history, rel=1e-3, abs=1e-5)


@pytest.mark.gpu
def test_a_capture_error_on_cuda_falls_back_to_the_eager_step(G, monkeypatch):
    Gc = Generator(**G.config).eval().cuda()
    Gc.load_state_dict(G.state_dict())
    target = _target(G).cuda()
    with torch.no_grad():
        codes = Gc.mapping(Gc.sample_z(2, seed=11).cuda())
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
