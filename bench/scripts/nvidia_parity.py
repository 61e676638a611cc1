"""Full-size parity of faceedit's readers with NVIDIA's own networks (issue: bring your own StyleGAN).

    FACEEDIT_NVIDIA_SRC=.../stylegan2-ada-pytorch FACEEDIT_SG3_SRC=.../stylegan3 \\
        python bench/scripts/nvidia_parity.py --device cuda --out DIR

A 1024 px config-f generator and its residual discriminator with random weights (biases,
noise strengths and ``w_avg`` moved off their zero initialisation, so that every path of
the conversion matters) are built by NVIDIA's code, once from stylegan2-ada-pytorch
(``training.networks``) and once from the stylegan3 repository
(``training.networks_stylegan2``), and pickled as NVIDIA's training loop does
(``{"G_ema": ..., "D": ...}``, classes carried by ``torch_utils.persistence``).
faceedit reads each pickle (nothing from it executed) and its images for the same z are
compared with NVIDIA's forward in fp32 (``force_fp32=True``, TF32 off) at truncation 1 and
0.7, constant noise; its discriminator's logits with NVIDIA's on the same images.

The rosinality ``.pt`` and TensorFlow layouts are written from the generator faceedit read
out of the ada pickle (rosinality: :func:`faceedit.checkpoints.rosinality.native_to_rosinality_state`;
TF: the test suite's tflib stand-in, which needs pytest), read back by those readers and
compared with NVIDIA's forward too: those two rows check the readers at full size, not an
independent writer.

Prints a markdown table (PSNR in dB, images in [-1, 1]; the issue asks for >= 40 dB) and
writes it, with JSON, under ``--out``.
"""
from __future__ import annotations

import argparse
import copy
import inspect
import json
import math
import os
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
NV_PREFIXES = ("training", "legacy", "dnnlib", "torch_utils")


def nvidia_modules(src: str, module: str):
    """Import ``dnnlib`` and ``module`` from NVIDIA's checkout ``src`` (faceedit has a ``training``
    folder of its own: NVIDIA's packages are imported afresh with ``src`` first on the path)."""
    for name in [n for n in sys.modules if n.split(".")[0] in NV_PREFIXES]:
        del sys.modules[name]
    try:
        import pkg_resources  # noqa: F401 - NVIDIA's conv2d_gradfix imports it
    except ImportError:  # setuptools >= 81 has none: NVIDIA's code only needs parse_version
        import types

        from packaging.version import parse

        sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=parse)
    sys.path.insert(0, src)
    try:
        import importlib

        dnnlib, nets = importlib.import_module("dnnlib"), importlib.import_module(module)
        # NVIDIA's reference ops, never its CUDA plugins: they are built at run time (minutes, a
        # compiler that matches torch), the stylegan3 repo's do not fall back when the build
        # fails, and the reference is what their parity tests compare the plugins against
        for op in ("bias_act", "upfirdn2d", "filtered_lrelu"):
            try:
                importlib.import_module(f"torch_utils.ops.{op}")._init = lambda: False
            except ImportError:
                pass
        return dnnlib, nets
    finally:
        sys.path.remove(src)


def build_nvidia(dnnlib, nets, seed: int, res: int = 1024):
    torch.manual_seed(seed)
    synthesis = dnnlib.EasyDict(channel_base=32768, channel_max=512, num_fp16_res=4, conv_clamp=256)
    # stylegan2-ada-pytorch takes ``synthesis_kwargs=``; the stylegan3 repo takes them as keywords
    param = inspect.signature(nets.Generator.__mro__[1].__init__).parameters["synthesis_kwargs"]  # past persistence
    flat = param.kind is inspect.Parameter.VAR_KEYWORD
    G = nets.Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=res, img_channels=3,
                       mapping_kwargs=dnnlib.EasyDict(num_layers=8),
                       **(synthesis if flat else {"synthesis_kwargs": synthesis}))
    D = nets.Discriminator(c_dim=0, img_resolution=res, img_channels=3, channel_base=32768, channel_max=512,
                           num_fp16_res=4, conv_clamp=256, epilogue_kwargs=dnnlib.EasyDict(mbstd_group_size=4))
    with torch.no_grad():
        for n, p in list(G.named_parameters()) + list(D.named_parameters()):
            if "noise_strength" in n or n.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.3)
        G.mapping.w_avg.copy_(torch.randn(512) * 0.5)
    return G.eval().requires_grad_(False), D.eval().requires_grad_(False)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2).double().square().mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def compare(name, ours, G_nv, D_ours, D_nv, z, device) -> dict:
    row = {"layout": name}
    ours = ours.to(device).eval()
    with torch.no_grad():
        for psi in (1.0, 0.7):
            ref = torch.cat([G_nv(zi[None], None, truncation_psi=psi, noise_mode="const", force_fp32=True) for zi in z])
            img = torch.cat([ours(zi[None], truncation_psi=psi, noise_mode="const") for zi in z])
            row[f"psnr_psi{psi:g}"] = psnr(img, ref)
            row[f"maxabs_psi{psi:g}"] = float((img - ref).abs().max())
        if D_ours is not None and D_nv is not None:
            x = ref
            d_ref = D_nv(x, None, force_fp32=True).flatten()
            d = D_ours.to(device).eval()(x).flatten()
            row["d_rel_err"] = float((d - d_ref).abs().max() / d_ref.abs().max())
    return row


def layout_row(name, src, module, res, z, dev, tmp) -> tuple:
    """Build with NVIDIA's code, pickle, read with faceedit, compare: ``(row, (ours, G_nv), pickle path)``."""
    from faceedit.checkpoints.nvidia import read_nvidia

    t0 = time.time()
    dnnlib, nets = nvidia_modules(src, module)
    G_nv, D_nv = build_nvidia(dnnlib, nets, seed=0, res=res)
    p = tmp / f"{module}.pkl"
    with open(p, "wb") as f:
        pickle.dump({"G_ema": copy.deepcopy(G_nv), "D": copy.deepcopy(D_nv)}, f)
    t_read = time.time()
    got = read_nvidia(p)
    t_read = time.time() - t_read
    G_nv, D_nv = G_nv.to(dev), D_nv.to(dev)
    row = compare(name, got["G"], G_nv, got["D"], D_nv, z, dev)
    row.update(file_mib=p.stat().st_size / 2**20, read_s=t_read, total_s=time.time() - t0)
    return row, (got["G"], G_nv), p


def rosinality_row(G, G_nv, res, z, dev, tmp) -> dict:
    from faceedit.checkpoints.rosinality import native_to_rosinality_state, read_rosinality

    G = G.cpu()
    nb = int(math.log2(res)) - 2
    sd = native_to_rosinality_state(G.state_dict(), nb, filters=True)
    p = tmp / "ros.pt"
    torch.save({"g_ema": sd, "latent_avg": G.mapping.w_avg.clone(),
                "args": argparse.Namespace(size=res, latent=512, n_mlp=8, lr_mlp=0.01, channel_multiplier=2)}, p)
    return {**compare("rosinality .pt (from the ada read)", read_rosinality(p)["G"], G_nv, None, None, z, dev),
            "file_mib": p.stat().st_size / 2**20}


def tf_row(G, G_nv, res, z, dev, tmp) -> dict:
    import pytest  # the tflib stand-in of the test suite uses pytest's monkeypatch

    sys.path.insert(0, str(REPO / "tests"))
    import test_checkpoints as tc
    import test_tf_pickle as tt

    from faceedit.checkpoints.convert import read_tf

    tc.NUM_BLOCKS = tt.NUM_BLOCKS = int(math.log2(res)) - 2
    tc.RES = tt.RES = res
    tt.G_KWARGS = dict(latent_size=512, dlatent_size=512, resolution=res, num_channels=3, label_size=0,
                       mapping_layers=8, fmap_base=16384, fmap_max=512)
    mp = pytest.MonkeyPatch()
    try:
        p = tt.write_tf_pkl(mp, tmp / "tf.pkl", G.cpu(), None)
    finally:
        mp.undo()
    return {**compare("TF pickle (from the ada read)", read_tf(p)["G"], G_nv, None, None, z, dev),
            "file_mib": p.stat().st_size / 2**20}


def run_row(rows: list, name: str, fn):
    """``fn()``'s row appended; a layout that fails is a row that says so and the others still run."""
    try:
        out = fn()
    except Exception as e:  # noqa: BLE001 - reported in the table
        rows.append({"layout": name, "error": f"{type(e).__name__}: {str(e)[:200]}"})
        print(f"{name}: {rows[-1]['error']}", flush=True)
        return None
    rows.append(out[0] if isinstance(out, tuple) else out)
    print(rows[-1], flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--n", type=int, default=8, help="z samples per truncation")
    ap.add_argument("--res", type=int, default=1024, help="resolution (smaller only to try the script on the CPU)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--keep-pickle", type=Path, default=None,
                    help="also write the ada pickle here (for a following `faceedit adopt`)")
    a = ap.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device(a.device)
    a.out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO))
    rows, tmp = [], Path(tempfile.mkdtemp())
    z = torch.randn(a.n, 512, generator=torch.Generator().manual_seed(1)).to(dev)
    srcs = [("stylegan2-ada-pytorch pickle", os.environ.get("FACEEDIT_NVIDIA_SRC"), "training.networks"),
            ("stylegan3-repo pickle", os.environ.get("FACEEDIT_SG3_SRC"), "training.networks_stylegan2")]
    ada = None
    for name, src, module in srcs:
        if not src:
            print(f"skip {name}: set the source path", flush=True)
            continue
        out = run_row(rows, name, lambda: layout_row(name, src, module, a.res, z, dev, tmp))
        if out is not None and ada is None:
            ada = out[1]
            if a.keep_pickle:
                a.keep_pickle.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(out[2], a.keep_pickle)
    if ada is not None:
        run_row(rows, "rosinality .pt (from the ada read)", lambda: rosinality_row(*ada, a.res, z, dev, tmp))
        run_row(rows, "TF pickle (from the ada read)", lambda: tf_row(*ada, a.res, z, dev, tmp))
    head = "| layout | PSNR psi=1 (dB) | PSNR psi=0.7 (dB) | max abs diff | D logits rel. err | file MiB |"
    gpu = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    lines = [f"{a.res} px config-f, random weights, {a.n} z, fp32, device {gpu}", "", head, "|" + "---|" * 6]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['layout']} | failed: {r['error']} | | | | |")
            continue
        d = f"{r['d_rel_err']:.1e}" if "d_rel_err" in r else "-"
        lines.append(f"| {r['layout']} | {r['psnr_psi1']:.1f} | {r['psnr_psi0.7']:.1f} | "
                     f"{max(r['maxabs_psi1'], r['maxabs_psi0.7']):.1e} | {d} | {r['file_mib']:.0f} |")
    table = "\n".join(lines)
    (a.out / "nvidia_parity.md").write_text(table + "\n")
    (a.out / "nvidia_parity.json").write_text(json.dumps(rows, indent=2))
    print(table)
    ok = rows and all("error" not in r and min(r["psnr_psi1"], r["psnr_psi0.7"]) >= 40 for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
