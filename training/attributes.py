"""Train the attribute network (:class:`faceedit.metrics.attributes.AttrNet`) on a face pack.

GPU job (also runs on the CPU, slowly)::

    faceedit --device cuda train-scorers --train packs/faces64_train.npz --out runs/attrnet --minutes 2.5

It reads the TRAIN pack only, holds out a random part of it for validation
(``--val-fraction``), trains for a wall-clock budget with a cosine learning-rate schedule
over that budget, and writes ``attrnet.safetensors`` (fp16) and ``attrnet.json`` (the
card: architecture, data hash, training settings, validation figures) into ``--out``.
Test-split figures are computed afterwards on the CPU with ``faceedit bench scorers``.

Losses: binary cross-entropy on the 40 CelebA attributes, masked where the label is
unknown (0, e.g. every UTKFace face); binary cross-entropy on ``female`` (UTKFace's gender,
else CelebA's ``Male`` negated); smooth-L1 on age / 10 (UTKFace ages only).
Augmentation on the device: horizontal flip, small rotation/scale/shift with reflection
padding, brightness/contrast/saturation jitter.
"""
from __future__ import annotations

import logging
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from faceedit.core.errors import TrainingError
from faceedit.core.files import sha256_file
from faceedit.core.pack import Pack
from faceedit.metrics.attributes import (AGE_SCALE, CELEBA_ATTRIBUTES, AttributeScorer, AttrNet, age_targets,
                                         celeba_label_matrix, evaluate_scores, gender_targets, save_attrnet)

log = logging.getLogger(__name__)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """x: ``[B, 3, H, W]`` in [-1, 1] -> augmented copy (see module docstring)."""
    b, dev = x.shape[0], x.device
    r = lambda *s: torch.rand(*s, device=dev, generator=gen)  # noqa: E731
    flip = r(b) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    ang = (r(b) * 2 - 1) * math.radians(8)
    scale = 1 + (r(b) * 2 - 1) * 0.08
    shift = (r(b, 2) * 2 - 1) * 0.06
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    x = x + (r(b, 1, 1, 1) * 2 - 1) * 0.1                                    # brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (1 + (r(b, 1, 1, 1) * 2 - 1) * 0.2) + mean             # contrast
    gray = x.mean(dim=1, keepdim=True)
    x = (x - gray) * (1 + (r(b, 1, 1, 1) * 2 - 1) * 0.2) + gray             # saturation
    return x.clamp(-1, 1)


def _losses(net_out, attrs, female, age):
    a_logit, g_logit, age_pred, _ = net_out
    a_logit, g_logit, age_pred = a_logit.float(), g_logit.float(), age_pred.float()
    known = attrs != 0
    tgt = (attrs > 0).float()
    bce = F.binary_cross_entropy_with_logits(a_logit, tgt, reduction="none")
    l_attr = (bce * known).sum() / known.sum().clamp_min(1)
    gk = ~torch.isnan(female)
    l_g = (F.binary_cross_entropy_with_logits(g_logit[gk], female[gk]) if gk.any()
           else a_logit.sum() * 0)
    ak = ~torch.isnan(age)
    l_age = (F.smooth_l1_loss(age_pred[ak], age[ak] / AGE_SCALE) if ak.any() else a_logit.sum() * 0)
    return l_attr, l_g, l_age


def train_attrnet(train_path, out_dir, *, minutes: float = 2.5, max_steps: int | None = None, epochs: float = 40.0,
                  val_every: float = 4.0,
                  batch_size: int = 512, lr: float = 2e-3, weight_decay: float = 0.05, width: int = 32,
                  val_fraction: float = 0.05, seed: int = 0, device="auto", progress=None) -> dict:
    """Train the attribute network and write its weights and card.

    Args:
        train_path: a TRAIN pack (``faceedit.core.pack`` format). Never pass the test pack.
        out_dir: output folder (``attrnet.safetensors``, ``attrnet.json``).
        minutes: wall-clock budget of the optimisation loop (the schedule spans it).
        max_steps: stop after this many steps even if time is left (tests, reproducibility).
        epochs: stop after this many passes over the training part; the schedule spans whichever
            of ``minutes``, ``epochs`` and ``max_steps`` runs out first.
        val_every: validate every this many epochs (and at the end); the weights with the best
            validation figure (mean of the 40-attribute mean AUC and the gender AUC) are kept.
        batch_size, lr, weight_decay, width: optimisation and architecture.
        val_fraction: random part of the train pack held out for validation.
        seed: permutation, initialisation and augmentation seed.
        device: ``auto``/``cpu``/``cuda``.
        progress: optional callable ``(step, seconds, losses dict)`` called every ~10 s.
    Returns:
        The card (dict) as written.
    """
    from faceedit.core.device import resolve_device

    t_start = time.time()
    dev = resolve_device(device)
    train_path = Path(train_path)
    if "test" in train_path.name.lower():
        raise TrainingError(f"{train_path} looks like a test pack; the attribute network is fitted on the "
                            f"train split only (pass faces64_train.npz)")
    if not 0 < val_fraction < 0.5:
        raise TrainingError(f"val_fraction must be in (0, 0.5), got {val_fraction}")
    torch.manual_seed(seed)
    pack = Pack(train_path)
    n = len(pack)
    if n < 20:
        raise TrainingError(f"{train_path} holds {n} faces; the attribute network needs at least 20")
    images = pack.images()
    attrs = celeba_label_matrix(pack.labels, n)
    female = gender_targets(pack.labels, attrs)
    age = age_targets(pack.labels, n)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_val = max(10, int(round(n * val_fraction)))
    val_idx, tr_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    t_load = time.time() - t_start

    x_all = torch.from_numpy(images[tr_idx]).permute(0, 3, 1, 2).contiguous().to(dev)  # uint8
    if x_all.shape[-1] != 64:
        raise TrainingError(f"the pack holds {x_all.shape[-1]} px faces; the attribute network takes 64 px "
                            f"(FACES64 recipe)")
    a_all = torch.from_numpy(attrs[tr_idx]).to(dev)
    g_all = torch.from_numpy(female[tr_idx]).to(dev)
    age_all = torch.from_numpy(age[tr_idx]).to(dev)
    net = AttrNet(width=width).to(dev)
    if dev.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay, betas=(0.9, 0.99))
    gen = torch.Generator(device=dev).manual_seed(seed)
    budget = float(minutes) * 60.0
    warmup = 200
    amp = dev.type == "cuda"
    step, seen, t0, t_log = 0, 0, time.time(), time.time()
    order = torch.randperm(len(tr_idx), device=dev, generator=gen)
    pos = 0
    hist, val_hist = [], []
    best = (-1.0, None, 0)
    next_val = val_every * len(tr_idx)
    val_labels = {k: np.asarray(v)[val_idx] for k, v in pack.labels.items()}

    def validate():
        net.eval()
        v = evaluate_scores(AttributeScorer(net, device=dev).scores(images[val_idx], batch_size=1024), val_labels)
        net.train()
        fig = np.nanmean([v["mean_auc"], v["gender"]["auc"]])
        val_hist.append({"step": step, "epoch": round(seen / len(tr_idx), 2), "mean_auc": v["mean_auc"],
                         "gender_auc": v["gender"]["auc"], "age_mae": v["age"]["mae"], "figure": float(fig)})
        log.info("validation at epoch %.1f: mean AUC %.4f, gender AUC %.4f, age MAE %.2f", seen / len(tr_idx),
                 v["mean_auc"], v["gender"]["auc"], v["age"]["mae"])
        return float(fig)
    net.train()
    while True:
        elapsed = time.time() - t0
        frac = max(elapsed / budget, seen / (epochs * len(tr_idx)),
                   step / max_steps if max_steps is not None else 0.0)
        if frac >= 1.0 or (max_steps is not None and step >= max_steps):
            break
        cur_lr = lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
        for gr in opt.param_groups:
            gr["lr"] = cur_lr
        if pos + batch_size > len(order):
            order = torch.randperm(len(tr_idx), device=dev, generator=gen)
            pos = 0
        idx = order[pos:pos + batch_size]
        pos += batch_size
        x = _augment(x_all[idx].float() / 127.5 - 1, gen)
        if dev.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
            out = net(x)
        l_attr, l_g, l_age = _losses(out, a_all[idx], g_all[idx], age_all[idx])
        loss = l_attr + l_g + 0.5 * l_age
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        seen += len(idx)
        if seen >= next_val:
            next_val += val_every * len(tr_idx)
            fig = validate()
            if fig > best[0]:
                best = (fig, {k: v.detach().clone() for k, v in net.state_dict().items()}, step)
        if time.time() - t_log > 10 or step == 1:
            t_log = time.time()
            rec = {"step": step, "seconds": round(t_log - t0, 1), "loss_attr": float(l_attr.detach()),
                   "loss_female": float(l_g.detach()), "loss_age": float(l_age.detach()), "lr": cur_lr}
            hist.append(rec)
            log.info("step %d %.0fs attr %.4f female %.4f age %.4f", step, t_log - t0, rec["loss_attr"],
                     rec["loss_female"], rec["loss_age"])
            if progress is not None:
                progress(step, t_log - t0, rec)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    train_s = time.time() - t0
    final_fig = validate()
    kept = "final"
    if best[1] is not None and best[0] > final_fig:
        net.load_state_dict(best[1])
        kept = f"step {best[2]} (best validation)"
    net = net.to(memory_format=torch.contiguous_format).eval()

    scorer = AttributeScorer(net, device=dev)
    val_scores = scorer.scores(images[val_idx], batch_size=1024)
    val = evaluate_scores(val_scores, val_labels)
    card = {
        "name": "attrnet",
        "what": "faceedit attribute network: CelebA's 40 attributes, female (gender), age (years)",
        "input": {"size": 64, "range": "[-1, 1] float or uint8 RGB", "recipe": "faces64"},
        "outputs": list(CELEBA_ATTRIBUTES) + ["female", "age"],
        "architecture": {"class": "faceedit.metrics.attributes.AttrNet", **net.config,
                         "parameters": int(sum(p.numel() for p in net.parameters())),
                         "feature_dim": net.feature_dim},
        "license": "non-commercial research only (trained on CelebA and UTKFace, whose terms apply)",
        "training": {
            "data": {"path": train_path.name, "sha256": sha256_file(train_path), "faces": int(n),
                     "train": int(len(tr_idx)), "validation": int(len(val_idx)), "meta": pack.meta},
            "split_note": "validation is a random part of the TRAIN pack; test figures come from "
                          "`faceedit bench scorers` on the test pack",
            "minutes_budget": minutes, "max_steps": max_steps, "steps": step, "samples_seen": seen,
            "epochs": round(seen / max(1, len(tr_idx)), 2), "seconds": round(train_s, 1),
            "seconds_loading": round(t_load, 1), "images_per_second": round(seen / max(train_s, 1e-9), 1),
            "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "seed": seed,
            "schedule": "linear warm-up 200 steps, cosine over the time budget", "optimizer": "AdamW",
            "precision": "bf16 autocast" if amp else "fp32", "device": str(dev),
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor(),
            "torch": torch.__version__, "epochs_budget": epochs, "weights_kept": kept,
            "validation_history": val_hist, "loss_history": hist,
        },
        "validation": val,
        "test": None,
    }
    save_attrnet(Path(out_dir) / "attrnet.safetensors", net.cpu(), card)
    return card


def summary_table(card: dict, key: str = "validation") -> str:
    """A short text table of a card's figures (validation or test)."""
    v = card[key]
    rows = [("faces", v["n"]), ("mean AUC (40 attrs)", f"{v['mean_auc']:.4f}")]
    for a in ("Smiling", "Male", "Young", "Eyeglasses", "Wearing_Hat", "Blond_Hair", "Mustache", "Bald"):
        rows.append((f"AUC {a}", f"{v['attributes'][a]['auc']:.4f}"))
    rows += [("gender AUC", f"{v['gender']['auc']:.4f} (n={v['gender']['n']})"),
             ("age MAE (years)", f"{v['age']['mae']:.2f} (n={v['age']['n']})")]
    if "training" in card and key == "validation":
        t = card["training"]
        rows += [("steps / epochs", f"{t['steps']} / {t['epochs']}"),
                 ("train seconds", t["seconds"]), ("images/s", t["images_per_second"])]
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"{k:<{w}}  {val}" for k, val in rows)
