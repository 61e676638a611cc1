"""Encoder latency per image at batch 32: our 64 px encoder and the same architecture at 1024 px.

The 64 px rows use the shipped encoders when the model folders hold them (else random
weights of the same architecture; the weights do not change the speed). The 1024 px row
is the same architecture (``networks.encoder.Encoder``, default widths) built for a
1024 px, 18-code, 512-d generator (StyleGAN2 FFHQ's layout) with random weights.

Run on the GPU machine::

    python bench/scripts/encoder_latency.py --out runs/enc_latency

Prints one table (ms per image, images per second; fp32 and bf16 autocast) and writes
``encoder_latency.json`` to ``--out``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from faceedit.core.device import resolve_device
from faceedit.training.encoder import encoder_latency


def _encoders(models, spaces, big_res: int, channels: int):
    from faceedit.networks.encoder import Encoder
    from faceedit.training.encoder import encoder_width

    kw = encoder_width(channels)
    for model, space in zip(models, spaces):
        E, src = None, "random weights"
        try:
            from faceedit.checkpoints.registry import load_model
            from faceedit.inversion.encoder import encoder_for

            m = load_model(model)
            try:
                E, _ = encoder_for(m, space, G=m.G)
                src = "shipped"
            except ValueError:
                E = Encoder.from_generator(m.G, space, **kw)
        except ValueError:  # model not on this machine: its architecture, random weights
            E = Encoder(64, 10, 256, space, **kw)
        yield f"{model} {space}", E, src
    num_ws = 2 * (big_res.bit_length() - 1) - 2
    yield f"{big_res} px arch w+", Encoder(big_res, num_ws, 512, "w+", **kw), "random weights"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--models", default="faces64,faces64-wpp")
    p.add_argument("--spaces", default="w+,wpp")
    p.add_argument("--big-res", type=int, default=1024, help="resolution of the large-input row")
    p.add_argument("--channels", type=int, default=256, help="encoder width (256 = the shipped architecture)")
    p.add_argument("--device", default=None)
    a = p.parse_args(argv)
    dev = resolve_device(a.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rows = []
    for name, E, src in _encoders(a.models.split(","), a.spaces.split(","), a.big_res, a.channels):
        E = E.to(dev).eval()
        params = sum(q.numel() for q in E.parameters())
        for amp in ([False, True] if dev.type == "cuda" else [False]):
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            s = encoder_latency(E, batch=a.batch, device=dev, iters=a.iters, warmup=a.warmup, amp=amp) * a.batch / 1000
            mem = torch.cuda.max_memory_allocated(dev) / 2 ** 30 if dev.type == "cuda" else float("nan")
            rows.append({"encoder": name, "input_px": E.resolution, "weights": src, "params": params,
                         "precision": "bf16" if amp else "fp32", "batch": a.batch,
                         "ms_per_image": 1000 * s / a.batch, "images_per_s": a.batch / s, "peak_gib": mem})
        del E
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    info = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "torch": torch.__version__, "rows": rows}
    (out / "encoder_latency.json").write_text(json.dumps(info, indent=2))
    print(f"encoder latency at batch {a.batch} on {info['device']} (torch {info['torch']})")
    print(f"{'encoder':<22}{'px':>6}{'params':>10}{'prec':>6}{'ms/img':>10}{'img/s':>10}{'GiB':>7}  weights")
    for r in rows:
        print(f"{r['encoder']:<22}{r['input_px']:>6}{r['params'] / 1e6:>9.2f}M{r['precision']:>6}"
              f"{r['ms_per_image']:>10.4f}{r['images_per_s']:>10.0f}{r['peak_gib']:>7.2f}  {r['weights']}")


if __name__ == "__main__":
    main()
