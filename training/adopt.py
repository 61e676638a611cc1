"""Adopt a checkpoint: one job that makes any readable generator usable by the whole toolkit.

    faceedit --device cuda adopt stylegan2-ffhq-256x256.pkl --name ffhq256 --minutes 10

:func:`adopt` takes whatever ``faceedit convert`` reads (native folder or zip, NVIDIA
``.pkl``, rosinality ``.pt``) and registers a native model in the cache
(``$FACEEDIT_HOME/models/<name>/``, found by ``--model <name>`` everywhere):

1. native conversion (``checkpoints.convert``), the discriminator kept when the source has one;
2. the alignment recipe: ``--recipe`` when given, else the one the source's config records,
   else FFHQ's (scale 1.0 at the model's resolution); never faces64 by default. It is
   written to ``config.json`` and said on the stage line;
3. the Gaussianized prior (``inversion.prior.fit_prior``, as ``faceedit fit-prior``);
4. InterFaceGAN directions fitted with the shipped attribute network by the path that
   fitted the shipped directions (``editing.fit_job.fit_attribute_set``, on the latent
   sequence ``directions fit-all`` draws for the same seed). The scorer was trained on the
   faces64 framing, so every sample is reframed from the model's recipe to the scorer's
   (:func:`reframe`; the identity for a faces64-framed model) before scoring. A direction
   whose held-out SVM accuracy is not above chance by :func:`chance_margin` is refused:
   skipped, logged, and listed under ``rejected`` in the report. The re-cut and this
   check are all that adopt adds to the shipped recipe;
5. GANSpace and SeFa directions (``editing.fit``);
6. optionally (``encoder=True``) an encoder trained in what is left of the time budget on
   synthetic pairs drawn from the model itself, so it serves the model's own recipe
   (``training.encoder.train_encoder``);
7. ``MODEL_CARD.md`` with ``samples.png`` and the measured numbers, and ``adopt_report.json``.

Direction files go to ``$FACEEDIT_HOME/directions/<name>/`` (where ``faceedit edit``
looks). The model folder is written to a temporary folder beside its final place and
renamed when complete, so an interrupted job never leaves a half-registered model.

Memory is bounded by design: the batch comes from the model's measured per-sample
footprint (:func:`per_sample_bytes`) and the memory there is (:func:`available_memory`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from faceedit.alignment.types import FACES64, FFHQ, AlignmentRecipe
from faceedit.core.device import resolve_device
from faceedit.core.errors import TrainingError

log = logging.getLogger(__name__)

#: Named recipes ``--recipe`` accepts; each is resized to the model's resolution.
RECIPES = {"ffhq": FFHQ, "faces64": FACES64}
#: The framing the shipped attribute network was trained on.
SCORER_RECIPE = FACES64
#: Held-out accuracy must exceed 0.5 by at least this much (and by 3 binomial standard errors).
MIN_MARGIN = 0.1
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class AdoptError(TrainingError):
    """A checkpoint, name or option that ``adopt`` cannot work with (the message names the fix)."""


# -- recipe and framing ------------------------------------------------------------------
def choose_recipe(recipe, resolution: int, recorded: dict | None = None) -> tuple:
    """The alignment recipe of an adopted model and why it was chosen.

    Args:
        recipe: ``None``, a name in :data:`RECIPES`, or an :class:`AlignmentRecipe` / dict.
        resolution: the generator's output size (the recipe is resized to it).
        recorded: the recipe the source checkpoint's config records, if any.
    Returns:
        ``(AlignmentRecipe, source)`` with source ``"--recipe"``, ``"checkpoint config"`` or
        ``"default (FFHQ)"``.
    Raises:
        AdoptError: an unknown recipe name or invalid fields.
    """
    try:
        if recipe is None and recorded:
            return AlignmentRecipe.from_dict(recorded).with_size(resolution), "checkpoint config"
        if recipe is None:
            return FFHQ.with_size(resolution), "default (FFHQ)"
        if isinstance(recipe, AlignmentRecipe):
            return recipe.with_size(resolution), "--recipe"
        if isinstance(recipe, dict):
            return AlignmentRecipe.from_dict(recipe).with_size(resolution), "--recipe"
    except (TypeError, ValueError) as e:
        raise AdoptError(f"invalid alignment recipe ({e})") from e
    key = str(recipe).lower()
    if key not in RECIPES:
        raise AdoptError(f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")
    return RECIPES[key].with_size(resolution), "--recipe"


def reframe(images: torch.Tensor, src: AlignmentRecipe, dst: AlignmentRecipe) -> torch.Tensor:
    """Re-cut images aligned with recipe ``src`` as recipe ``dst`` would have cut them.

    Both recipes cut the FFHQ quad around the same centre; only its side differs, by
    ``dst.scale / src.scale``. So the ``dst`` crop is the centred square of that relative
    side inside the ``src`` crop (a similarity transform: scale about the centre). It is
    sampled bilinearly at the source's own pixel density (no aliasing), then area-resized
    to ``dst.size``; where the ``dst`` square reaches beyond the ``src`` crop the border is
    reflected, like the FFHQ recipe's padding.

    Convention: ``[N, C, H, W]`` float, pixel centres at integer + 0.5
    (``align_corners=False``).

    Args:
        images: ``[N, C, R, R]`` float images aligned with ``src``.
        src: the recipe the images were made with (``size`` must be ``R``).
        dst: the recipe to reframe to.
    Returns:
        ``[N, C, dst.size, dst.size]`` float.
    Raises:
        ValueError: the images are not square ``[N, C, R, R]`` with ``R == src.size``.
    """
    if images.ndim != 4 or images.shape[-1] != images.shape[-2] or images.shape[-1] != src.size:
        raise AdoptError(f"images must be [N, C, {src.size}, {src.size}] (the source recipe's size), got "
                         f"{tuple(images.shape)}")
    ratio = float(dst.scale) / float(src.scale)
    if abs(ratio - 1.0) < 1e-9:
        x = images
    else:
        side = max(int(dst.size), int(round(src.size * ratio)))
        theta = torch.tensor([[ratio, 0.0, 0.0], [0.0, ratio, 0.0]], dtype=images.dtype, device=images.device)
        grid = F.affine_grid(theta.expand(len(images), 2, 3), [len(images), images.shape[1], side, side],
                             align_corners=False)
        x = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if x.shape[-1] != dst.size:
        x = F.interpolate(x, size=(dst.size, dst.size), mode="area" if x.shape[-1] > dst.size else "bilinear")
    return x


# -- memory --------------------------------------------------------------------------------
def available_memory(device) -> int:
    """Bytes free for this job on ``device``.

    CUDA: ``torch.cuda.mem_get_info``. CPU: ``MemAvailable`` of ``/proc/meminfo`` (Linux),
    else ``os.sysconf`` available pages; read directly because psutil is not a dependency.
    """
    dev = resolve_device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        log.warning("free memory cannot be read on this platform; assuming 4 GiB to size the batch")
        return 4 << 30


@torch.no_grad()
def per_sample_bytes(G) -> int:
    """Upper bound of the memory one sample takes in a no-grad synthesis pass, in bytes.

    Measured, not guessed from the architecture: one batch-1 pass records every module's
    output size, containers included (summed: an upper bound, since most are freed while
    the pass runs and a container's output is also its last child's), plus
    three copies of the largest per-sample modulated weight (``Cout * Cin * k * k``: the
    reference path's grouped convolution makes them per sample), in float32.
    """
    sizes = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(o.numel() if torch.is_tensor(o) else 0))
             for m in G.synthesis.modules()]
    try:
        dev = G.synthesis.const.device
        ws = G.mapping(torch.randn((1, *G.z_shape), device=dev))
        G.synthesis(ws, noise_mode="const")
    finally:
        for h in hooks:
            h.remove()
    wmax = max((p.numel() for p in G.synthesis.parameters() if p.ndim == 4), default=0)
    return int(4 * (sum(sizes) + 3 * wmax))


def choose_batch(G, device, *, training: bool = False, cap: int = 256, share: float = 0.4) -> tuple:
    """Batch size that keeps a pass within ``share`` of the free memory.

    Args:
        G: generator (on ``device``).
        training: a pass with gradients (activations kept for backward: 4x the footprint).
        cap: the largest batch returned.
        share: fraction of the free memory one pass may use.
    Returns:
        ``(batch, per_sample_bytes, free_bytes)``.
    """
    per = per_sample_bytes(G) * (4 if training else 1)
    free = available_memory(device)
    return max(1, min(int(cap), int(share * free // max(per, 1)))), per, free


def chance_margin(n_val: int) -> float:
    """How far above 0.5 a held-out accuracy on ``n_val`` samples must be to count.

    The larger of :data:`MIN_MARGIN` and three binomial standard errors of a coin's
    accuracy (``3 * 0.5 / sqrt(n_val)``), so a chance-level scorer passes in fewer than
    0.2% of fits however few samples were held out.
    """
    return max(MIN_MARGIN, 1.5 / math.sqrt(max(int(n_val), 1)))


# -- the job -------------------------------------------------------------------------------
def _fmt_time(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def _samples_png(G, path: Path, *, n: int = 16, seed: int = 0) -> Path:
    import cv2

    from faceedit.core.files import atomic_write_bytes
    from faceedit.core.images import tensor_to_uint8

    dev = G.synthesis.const.device
    with torch.no_grad():
        z = G.sample_z(n, seed=seed, device=dev)
        imgs = tensor_to_uint8(torch.cat([G.synthesis(G.mapping(c), noise_mode="const") for c in z.split(4)]))
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    R = imgs.shape[1]
    sheet = np.zeros((rows * R, cols * R, 3), np.uint8)
    for i, im in enumerate(imgs):
        sheet[(i // cols) * R:(i // cols + 1) * R, (i % cols) * R:(i % cols + 1) * R] = im
    ok, enc = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return atomic_write_bytes(path, enc.tobytes())


def model_card(report: dict) -> str:
    """``MODEL_CARD.md`` of an adopted model from its report (see :func:`adopt`)."""
    r = report
    rc = r["recipe"]
    lines = [f"# {r['name']}", "",
             f"Adopted by `faceedit adopt` from `{r['source']['path']}` ({r['source']['format']}, sha256 "
             f"`{r['source']['sha256'][:16]}...`) on {r['device']} in {_fmt_time(r['seconds_total'])}.", "",
             f"Model id: `{r['model_id']}`; resolution {r['resolution']} px; {r['params']:,} generator parameters; "
             "discriminator: " + ("kept" if r["discriminator"] else
                                  "none in the source (inversion uses its other losses)") + ".",
             "", "![samples](samples.png)", "", "Samples: seeds 0-15 of `G.sample_z`, truncation 1.", "",
             "## Alignment recipe", "",
             f"`{rc['name']}`: scale {rc['scale']} of the FFHQ quad at {rc['size']} px ({r['recipe_source']}). "
             f"Photos are aligned with it before inversion.", "",
             "## Prior", ""]
    p = r["prior"]
    lines += [f"Gaussianized prior from {p['n']:,} mapping samples ({p['kind']}); check on fresh samples: "
              f"chi-square mean ratio {p.get('check_mean_ratio', float('nan')):.4f}, variance ratio "
              f"{p.get('check_var_ratio', float('nan')):.4f}, KS {p.get('check_ks', float('nan')):.4f}.", "",
              "## Attribute directions", "",
              f"Scorer `{r['directions']['scorer']}` on images reframed from `{rc['name']}` to "
              f"`{r['directions']['scorer_recipe']}`; {r['directions']['samples']:,} samples, top/bottom "
              f"{r['directions']['fraction']:.0%} kept, batch {r['batch']} "
              f"({r['seconds_per_image'] * 1000:.1f} ms per image).", "",
              "| direction | held-out accuracy | needed | kept/val | std | |", "| --- | --- | --- | --- | --- | --- |"]
    for k, d in r["directions"]["fitted"].items():
        lines.append(f"| {k} | {d['accuracy']:.3f} | {d['needed']:.3f} | {d['n_kept']}/{d['n_val']} | "
                     f"{d['std']:.4g} | kept |")
    for k, d in r["directions"]["rejected"].items():
        acc = "" if d.get("accuracy") is None else f"{d['accuracy']:.3f}"
        need = "" if d.get("needed") is None else f"{d['needed']:.3f}"
        lines.append(f"| {k} | {acc} | {need} | | | refused: {d['reason']} |")
    if r["directions"]["conditional"]:
        lines += ["", "Conditional: " + ", ".join(f"`{k}`" for k in r["directions"]["conditional"]) + "."]
    lines += ["", f"Unsupervised: {r['unsupervised']['ganspace']} GANSpace and {r['unsupervised']['sefa']} SeFa "
              f"directions.", ""]
    e = r.get("encoder")
    lines += ["## Encoder", ""]
    if e:
        lines.append(f"`encoder_{e['space'].replace('+', 'plus')}`: {e['steps']} steps in "
                     f"{_fmt_time(e['train_seconds'])} on synthetic pairs from this model (batch {e['batch']}); "
                     f"synthetic latent MSE {e['before'].get('syn_latent_mse', float('nan')):.4g} -> "
                     f"{e['after'].get('syn_latent_mse', float('nan')):.4g}, image MSE "
                     f"{e['before'].get('syn_mse', float('nan')):.4g} -> "
                     f"{e['after'].get('syn_mse', float('nan')):.4g}.")
    else:
        lines.append("None (`faceedit adopt --encoder` trains one); inversion optimises from the mean code.")
    lines += ["", "## Timings", "", "| stage | seconds |", "| --- | --- |"]
    lines += [f"| {k} | {v:.1f} |" for k, v in r["timings"].items()]
    lines += ["", f"License: {r['license'] or 'as the source checkpoint'}.", ""]
    return "\n".join(lines)


def adopt(checkpoint, name: str, *, recipe=None, minutes: float = 10.0, n: int | None = None,
          encoder: bool = False, device="cpu", scorer=None, scorer_recipe: AlignmentRecipe = SCORER_RECIPE,
          attrs=None, prior_n: int | None = None, unsupervised: int = 8, fraction: float | None = None,
          batch: int | None = None, force: bool = False, seed: int = 0, svm_c: float | None = None,
          stage: Callable[[str], None] | None = None,
          progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Turn ``checkpoint`` into the registered model ``name`` (see the module docstring).

    Args:
        checkpoint: any file or folder ``faceedit convert`` reads; never modified.
        name: registry name for the result (letters, digits, ``._-``; not a shipped name).
        recipe: ``--recipe`` (see :func:`choose_recipe`).
        minutes: wall-time budget. Without an explicit ``n`` the sample count is cut to
            fit half of it (40% with an encoder); the encoder gets what is left.
        n: latents sampled and scored for the InterFaceGAN directions (default 100000 on
            CUDA, 4000 on the CPU).
        encoder: also train an encoder (W+ for an MLP mapping, W++ for a transformer).
        device: ``torch.device`` or name.
        scorer: callable ``images [B, 3, 64, 64] in [-1, 1] -> {attribute: scores [B]}`` seeing
            images in ``scorer_recipe``'s framing (default: the shipped attribute network).
        scorer_recipe: the framing ``scorer`` was trained on.
        attrs: attributes to fit (default: smile, age, male, eyeglasses, young where scored).
        prior_n: mapping samples for the prior (default 100000).
        unsupervised: GANSpace and SeFa directions each (0: none).
        fraction: kept at each end for the SVM (default 0.02 from 20000 samples, else 0.05).
        batch: synthesis batch (default: :func:`choose_batch`).
        force: replace an earlier adoption of the same name.
        seed: seed of the samples (prior, directions, encoder); the directions' latents are
            the ones ``faceedit directions fit-all`` draws with the same seed.
        svm_c: the InterFaceGAN SVM's regularisation (default
            ``faceedit.editing.fit.SVM_C``, the shipped directions').
        stage: called with one line per stage (what runs, elapsed, time left).
        progress: called with ``(stage, done, total)`` during sampling.
    Returns:
        The report (also written as ``adopt_report.json``): ``path``, ``model_id``, ``recipe``,
        ``prior``, ``directions`` (``fitted``, ``rejected``, ``conditional``), ``unsupervised``,
        ``encoder``, ``timings``, ``batch``, ``seconds_per_image``.
    Raises:
        AdoptError: a bad name, an existing adoption without ``force``, a recipe or scorer
            that does not fit; CheckpointError: an unreadable checkpoint.
    """
    from faceedit.checkpoints.convert import convert_to_native_in_memory, sniff
    from faceedit.checkpoints.native import load_native, model_safetensors_bytes, read_config, save_native
    from faceedit.core.files import sha256_file
    from faceedit.checkpoints.registry import REGISTRY, cache_dir
    from faceedit.editing.direction import canonical_attribute
    from faceedit.core.errors import EditingError
    from faceedit.editing.fit import SVM_C, ganspace, sample_and_score, sefa
    from faceedit.editing.fit_job import CORE, classifier_scorer, fit_attribute_set
    from faceedit.inversion.prior import DEFAULT_N, fit_prior

    t_start = time.time()
    say = stage or (lambda msg: log.info("%s", msg))
    timings = {}
    if not NAME_RE.fullmatch(str(name)):
        raise AdoptError(f"model name {name!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a "
                         f"letter or digit")
    if name in REGISTRY:
        raise AdoptError(f"{name!r} is a registered model's name; choose another --name")
    dev = resolve_device(device)
    home = cache_dir()
    final = home / "models" / name
    dir_folder = home / "directions" / name
    if final.exists() and not force:
        raise AdoptError(f"a model {name!r} is already adopted at {final}; pass --force to replace it or choose "
                         f"another --name")
    checkpoint = Path(checkpoint)

    # 1. native conversion
    t = time.time()
    kind = sniff(checkpoint)
    if kind == "native":
        has_d = read_config(checkpoint).get("discriminator") is not None
        m = load_native(checkpoint, with_discriminator=has_d)
    else:
        m = convert_to_native_in_memory(checkpoint)
    G, D, cfg = m.G.to(dev).eval(), m.D, m.config
    D = D.to(dev).eval() if D is not None else None
    sha = hashlib.sha256(model_safetensors_bytes(G)).hexdigest()
    model_id = f"{name}@{sha[:12]}"
    params = sum(p.numel() for p in G.parameters())
    rcp, rsrc = choose_recipe(recipe, G.resolution, cfg.get("recipe"))
    timings["convert"] = time.time() - t
    say(f"[1/6] read {checkpoint.name} ({kind}): {G.resolution} px, {params:,} parameters, "
        f"{G.mapping_kind} mapping, discriminator {'kept' if D is not None else 'none'}; model id {model_id}; "
        f"recipe {rcp.name} scale {rcp.scale} at {rcp.size} px ({rsrc})")

    # memory-bounded batch
    b_auto, per, free = choose_batch(G, dev)
    bs = int(batch or b_auto)
    say(f"      batch {bs}: about {per / 2**20:.1f} MiB a sample, {free / 2**30:.1f} GiB free on {dev.type}")

    # 2. prior
    t = time.time()
    pn = int(prior_n or DEFAULT_N)
    say(f"[2/6] prior from {pn:,} mapping samples")
    stats = fit_prior(G, pn, batch=min(4096, max(256, bs * 16)), seed=seed)
    timings["prior"] = time.time() - t
    prior_rep = {"n": pn, "kind": "joint" if float(stats["joint"]) else "per-layer",
                 **{k: float(stats[k]) for k in ("shrinkage", "w_std", "check_mean_ratio", "check_var_ratio",
                                                 "check_ks") if k in stats}}

    # 3. scored samples -> InterFaceGAN directions, by the path of the shipped ones (fit_job)
    aucs = {}
    if scorer is None:
        score_fn, aucs, scorer_id = classifier_scorer(None, dev)
    else:
        score_fn, scorer_id = scorer, getattr(scorer, "__name__", "custom")

    def framed(img):
        return score_fn(reframe(img, rcp, scorer_recipe))

    n_explicit = n is not None
    n = int(n or (100_000 if dev.type == "cuda" else 4000))
    t = time.time()
    b0 = min(bs, n)
    codes0, scores0 = sample_and_score(G, framed, b0, seed=seed, batch=b0, device=dev)
    per_img = max((time.time() - t) / b0, 1e-6)
    share = (0.4 if encoder else 0.5) * minutes * 60
    if not n_explicit and n * per_img > share:
        n_fit = max(b0, int(share / per_img))
        say(f"      {per_img * 1000:.1f} ms an image: {n:,} samples would take {_fmt_time(n * per_img)}, more than "
            f"{share / 60:.1f} of the {minutes:g} minutes; using {n_fit:,} (raise --minutes or pass --n)")
        n = n_fit
    say(f"[3/6] sample+score {n:,} images: {per_img * 1000:.1f} ms an image on {dev.type}, about "
        f"{_fmt_time(n * per_img)} (elapsed {_fmt_time(time.time() - t_start)})")
    if progress is not None:
        progress("sample+score", b0, n)
    rest = n - b0
    if rest > 0:  # the same latent sequence continued: the samples of one fit_job run of this seed
        cb = (lambda d, tot: progress("sample+score", b0 + d, n)) if progress is not None else None
        codes1, scores1 = sample_and_score(G, framed, rest, seed=seed, start=b0, batch=bs, device=dev, progress=cb)
        codes = np.concatenate([codes0, codes1])
        scores = {k: np.concatenate([scores0[k], scores1[k]]) for k in scores0}
    else:
        codes, scores = codes0, scores0
    timings["sample_and_score"] = time.time() - t
    fraction = float(fraction or (0.02 if n >= 20000 else 0.05))
    want = [canonical_attribute(a) for a in attrs] if attrs else [a for a in CORE if a in scores]
    t = time.time()
    try:
        fit = fit_attribute_set(codes, scores, want, model_id=model_id, num_ws=G.num_ws, arch=G.arch,
                                scorer=scorer_id, fraction=fraction, seed=seed, aucs=aucs,
                                C=SVM_C if svm_c is None else float(svm_c),
                                meta={"scorer_recipe": scorer_recipe.name, "model_recipe": rcp.name},
                                needed=lambda n_val: 0.5 + chance_margin(n_val))
    except EditingError as e:
        raise AdoptError(str(e)) from e
    fitted, rejected = fit["fitted"], fit["refused"]
    for a, r in rejected.items():
        say(f"      {a}: refused: " + (r["reason"] if r["accuracy"] is None else
                                      f"held-out accuracy {r['accuracy']:.3f} < {r['needed']:.3f} (chance 0.5 + "
                                      f"margin on {r['n_val']} held-out samples)"))
    dirs = list(fitted.values()) + fit["conditional"]
    conditional = [d.key for d in fit["conditional"]]
    timings["fit_directions"] = time.time() - t
    say(f"[4/6] directions: kept {', '.join(f'{a} {d.accuracy:.3f}' for a, d in fitted.items()) or 'none'}; "
        f"refused {', '.join(rejected) or 'none'} (elapsed {_fmt_time(time.time() - t_start)})")

    # 4. unsupervised
    t = time.time()
    n_gs = n_sf = 0
    if unsupervised:
        sub = codes[: min(len(codes), 50000)]
        k = min(int(unsupervised), G.w_dim, max(1, len(sub) - 1))
        gs = ganspace(sub, model_id=model_id, arch=G.arch, num_ws=G.num_ws, k=k, seed=seed)
        sf = sefa(G, model_id=model_id, k=k, codes=sub)
        dirs += gs + sf
        n_gs, n_sf = len(gs), len(sf)
    timings["unsupervised"] = time.time() - t
    say(f"[5/6] {n_gs} GANSpace + {n_sf} SeFa directions")

    # 5. encoder
    enc_rep = None
    E = None
    if encoder:
        from faceedit.networks.encoder import Encoder

        from .encoder import evaluate, train_encoder

        space = "wpp" if G.mapping_kind == "transformer" else "w+"
        left = minutes * 60 - (time.time() - t_start) - 10
        enc_min = max(left / 60, 0.05)
        eb = max(1, min(32, choose_batch(G, dev, training=True)[0]))
        say(f"[6/6] encoder ({space}) for {_fmt_time(enc_min * 60)} at batch {eb} on synthetic pairs")
        torch.manual_seed(seed)
        E = Encoder.from_generator(G, space).to(dev)
        before = evaluate(G, E, n_syn=32, batch=eb)
        with torch.enable_grad():
            res = train_encoder(G, E, torch.zeros((0, 3, G.resolution, G.resolution), dtype=torch.uint8), D=D,
                                minutes=enc_min, batch=eb, seed=seed, log_every=50)
        after = evaluate(G, E, n_syn=32, batch=eb)
        enc_rep = {"space": space, "steps": res["steps"], "train_seconds": res["seconds"], "batch": eb,
                   "data": "synthetic pairs from the model", "before": before, "after": after,
                   "perceptual": "disc" if D is not None else "none"}
        timings["encoder"] = res["seconds"]
    else:
        say("[6/6] no encoder (--encoder trains one)")

    # write: model folder (temporary, then renamed), directions, card
    t = time.time()
    home.joinpath("models").mkdir(parents=True, exist_ok=True)
    tmp = home / "models" / f".{name}.adopting"
    shutil.rmtree(tmp, ignore_errors=True)
    prov = {**(cfg.get("provenance") or {}),
            "adopted": {"from": str(checkpoint.resolve()), "format": kind,
                        "sha256": sha256_file(checkpoint if checkpoint.is_file() else checkpoint / "model.safetensors"),
                        "recipe_source": rsrc, "date": time.strftime("%Y-%m-%d")}}
    save_native(tmp, G.cpu(), name=name, D=None if D is None else D.cpu(), recipe=rcp.to_dict(),
                license=cfg.get("license", ""), provenance=prov, prior=stats)
    if E is not None:
        from .encoder import save_encoder

        save_encoder(tmp, E.cpu(), model_id=model_id, model_sha256=sha, record=enc_rep)
    G.to(dev)
    _samples_png(G, tmp / "samples.png", seed=seed)
    if not (tmp / "model.safetensors").is_file() or sha256_file(tmp / "model.safetensors") != sha:
        raise AdoptError("the written model.safetensors does not hash to the model id; report this as a bug")
    old = dir_folder / "adopt_directions.json"
    if old.is_file():  # an earlier adoption's files (force): remove them, never other files
        for f in json.loads(old.read_text()).get("files", []):
            (dir_folder / Path(f).name).unlink(missing_ok=True)
    written = [d.save(dir_folder).name for d in dirs]
    from faceedit.core.files import atomic_write_text

    atomic_write_text(dir_folder / "adopt_directions.json", json.dumps({"model_id": model_id, "files": written}))
    timings["write"] = time.time() - t
    report = {"name": name, "model_id": model_id, "path": str(final), "resolution": G.resolution,
              "params": int(params), "discriminator": D is not None, "device": str(dev),
              "source": {"path": str(checkpoint), "format": kind, "sha256": prov["adopted"]["sha256"]},
              "recipe": rcp.to_dict(), "recipe_source": rsrc, "prior": prior_rep, "batch": bs,
              "per_sample_mib": per / 2**20, "seconds_per_image": per_img, "license": cfg.get("license", ""),
              "directions": {"scorer": scorer_id, "scorer_recipe": scorer_recipe.name, "samples": n,
                             "fraction": fraction, "folder": str(dir_folder), "files": written,
                             "fitted": {a: {"accuracy": d.accuracy, "train_accuracy": d.meta["train_accuracy"],
                                            "needed": 0.5 + chance_margin(d.meta["n_val"]),
                                            "n_val": d.meta["n_val"], "n_kept": d.meta["n_kept"],
                                            "std": d.latent_std} for a, d in fitted.items()},
                             "rejected": rejected, "conditional": conditional},
              "unsupervised": {"ganspace": n_gs, "sefa": n_sf}, "encoder": enc_rep, "timings": timings}
    report["seconds_total"] = time.time() - t_start
    atomic_write_text(tmp / "adopt_report.json", json.dumps(report, indent=2, default=float))
    atomic_write_text(tmp / "MODEL_CARD.md", model_card(report))
    if final.exists():
        trash = home / "models" / f".{name}.replaced"
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
    say(f"done in {_fmt_time(report['seconds_total'])}: {final}; try `faceedit edit photo.jpg --model {name} "
        f"--attr {next(iter(fitted), 'smile')}`")
    return report


__all__ = ["AdoptError", "RECIPES", "SCORER_RECIPE", "adopt", "available_memory", "chance_margin", "choose_batch",
           "choose_recipe", "model_card", "per_sample_bytes", "reframe"]
