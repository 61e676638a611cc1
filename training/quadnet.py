"""Training data and training loop for QuadNet (``faceedit.alignment.quadnet``).

``extract_samples``: for TRAIN-split CelebA and UTKFace photos only (the test split is
refused), the largest dlib face's 68 points as ``align(landmarks='dlib68')`` finds them
(``alignment.landmarks68_averaged``: the target) and MTCNN's calibrated points of the
same face, which frame a grey crop stored as JPEG at 1.5x the net's framing (same pixel density), so that re-framed
crops can be cut from it while training. Points are kept in the stored crop's pixels.

``train_quadnet``: AdamW with warm-up and a cosine learning rate on the L1 error; each
batch is cut from the stored crops with random framings (rotation, scale, shift), half
mirrored, with brightness, contrast, blur and noise changes. A random part of the TRAIN
faces is held out for the figures it returns.
"""
from __future__ import annotations

import logging
import math
import time

import numpy as np

from faceedit.core.errors import TrainingError

log = logging.getLogger(__name__)


def _dlib4(lm68: np.ndarray) -> np.ndarray:
    from faceedit.alignment.landmarks import eye_mouth_points

    return np.stack(eye_mouth_points(lm68))


# What is stored per face: a grey crop framed by the calibrated MTCNN points at 1.5x the net's
# framing and at the same pixel density, so the net's 64 px crop is its centre and jittered
# framings can be cut from it on the GPU.
STORE_SIZE = 96
STORE_SCALE_FACTOR = 1.5


def sample_face(path: str):
    """``(grey crop [96, 96] uint8, dlib targets [8], calibrated MTCNN points [8])`` or a reason string.

    Points are in the stored crop's pixel coordinates: the targets are the eye-contour means
    and outer mouth corners of :func:`~faceedit.alignment.landmarks68_averaged`.
    """
    import cv2

    from faceedit.alignment import calibrate_mtcnn5, detect_faces, landmarks68_averaged, mtcnn5_refined
    from faceedit.alignment.ffhq import apply_matrix
    from faceedit.alignment.quadnet import CROP_SCALE, quad_crop
    from faceedit.core.images import load_image

    img = load_image(path)
    ds = detect_faces(img, "dlib")
    if not ds:
        return "dlib: no face"
    d = max(ds, key=lambda x: x.size)
    target = _dlib4(landmarks68_averaged(img, d.box))
    c = np.asarray(d.center)
    ms = [m for m in detect_faces(img, "mtcnn") if np.hypot(*(np.asarray(m.center) - c)) < 0.3 * d.size]
    if not ms:
        return "mtcnn: no face at dlib's"
    m = min(ms, key=lambda x: np.hypot(*(np.asarray(x.center) - c)))
    p5 = calibrate_mtcnn5(mtcnn5_refined(img, m.box))
    crop, M = quad_crop(img, p5, STORE_SIZE, scale=CROP_SCALE * STORE_SCALE_FACTOR)
    return (cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY), apply_matrix(M, target).ravel().astype(np.float32),
            apply_matrix(M, p5[[0, 1, 3, 4]]).ravel().astype(np.float32))


def _sample_job(job):
    path, name = job
    try:
        r = sample_face(path)
    except Exception as e:  # noqa: BLE001 -- a photo that fails is reported, the run goes on
        r = f"{type(e).__name__}: {e}"
    return name, r


def extract_samples(records: list, *, workers: int = 2, progress=None) -> dict:
    """Stored crops and targets for QuadNet from data-set records (``training.dataset.list_sources``), TRAIN only.

    Returns:
        ``{"jpeg": uint8 [B] (the grey crops as JPEG files, concatenated), "offsets": int64 [N + 1],
        "targets": float32 [N, 8], "mtcnn": float32 [N, 8], "names": str [N], "failed": {name: reason}}``
        (points in the stored crops' pixel coordinates, see :func:`sample_face`).
    Raises:
        ValueError: a record is not from the train split.
    """
    import multiprocessing

    import cv2

    from .dataset import init_worker

    bad = [r["name"] for r in records if r.get("split") != "train"]
    if bad:
        raise TrainingError(f"QuadNet is fitted on train-split faces only; {len(bad)} record(s) are not, e.g. {bad[0]}")
    jobs = [(r["path"], r["name"]) for r in records]
    blobs, targets, own, names, failed = [], [], [], [], {}
    t0 = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(workers, init_worker) as pool:
        for k, (name, r) in enumerate(pool.imap(_sample_job, jobs, chunksize=16)):
            if isinstance(r, str):
                failed[name] = r
            else:
                blobs.append(cv2.imencode(".jpg", r[0], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].ravel())
                targets.append(r[1])
                own.append(r[2])
                names.append(name)
            if progress and (k + 1) % 1000 == 0:
                progress(k + 1, len(jobs), time.perf_counter() - t0)
    if not blobs:
        raise TrainingError(f"no usable face in any of the {len(jobs)} photos (a dlib face with an MTCNN face at its "
                            f"place is needed); reasons: {sorted(set(failed.values()))[:3]}")
    return {"jpeg": np.concatenate(blobs), "offsets": np.cumsum([0] + [len(b) for b in blobs]),
            "targets": np.array(targets), "mtcnn": np.array(own), "names": np.array(names), "failed": failed}


def decode_crops(samples: dict) -> np.ndarray:
    """``[N, 96, 96]`` uint8 grey crops of :func:`extract_samples`' output."""
    import cv2

    j, o = samples["jpeg"], samples["offsets"]
    return np.stack([cv2.imdecode(j[o[i]:o[i + 1]], cv2.IMREAD_GRAYSCALE) for i in range(len(o) - 1)])


def _frames(n: int, amount: float, gen, device):
    """Random framings: ``(theta [n, 2, 3] for affine_grid, A [n, 2, 2], t [n, 2])`` with x_in = (2/3)(A x + t).

    ``amount`` scales the jitter (rotation 4 deg, scale 5%, shift 4% of the crop, all sd); a
    quarter of the framings are left as MTCNN made them.
    """
    import torch

    r = torch.randn(n, 4, generator=gen, device=device) * amount
    r[torch.rand(n, generator=gen, device=device) < 0.25] = 0
    a, sc = r[:, 0] * math.radians(4.0), torch.exp(r[:, 1] * 0.05)
    cos, sin = torch.cos(a) * sc, torch.sin(a) * sc
    A = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    t = r[:, 2:] * 0.08  # normalised coordinates span 2: 4% of the crop
    k = 1.0 / STORE_SCALE_FACTOR
    return torch.cat([k * A, k * t[:, :, None]], 2), A, t


def _to_net_frame(pts, A, t):
    """Stored-crop pixel points ``[n, 8]`` -> fractions of the net's crop cut with framing ``(A, t)``."""
    import torch

    v = pts.view(-1, 4, 2) / STORE_SIZE * 2 - 1  # input normalised coordinates
    x = torch.linalg.solve(A, (v * STORE_SCALE_FACTOR - t[:, None, :]).transpose(1, 2)).transpose(1, 2)
    return ((x + 1) / 2).reshape(-1, 8)


def train_quadnet(samples: dict, *, steps: int = 18000, batch: int = 256, lr: float = 2e-3, val_frac: float = 0.05,
                  jitter: float = 1.0, width: int = 40, seed: int = 0, device: str = "cpu", log_every: int = 500):
    """Fit a QuadNet on :func:`extract_samples`' output; returns ``(net, record)``.

    Each step cuts the net's 64 px crops from the stored crops with random framings
    (:func:`_frames`, bilinear), mirrors half of them, and varies brightness, contrast, blur
    and noise. The record holds held-out figures (a random ``val_frac`` of the TRAIN faces, at
    MTCNN's own framing): mean L1 error as a fraction of the crop, quad agreement with the
    dlib targets and the side ratio's spread, for the calibrated MTCNN points and for the net.
    """
    import torch
    import torch.nn.functional as F

    from faceedit.alignment.quadnet import CROP, mirror_targets, new_quadnet

    torch.manual_seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    n = len(samples["targets"])
    is_val = np.random.default_rng(seed).random(n) < val_frac
    X = torch.from_numpy(decode_crops(samples)).to(device)[:, None]  # uint8 [N, 1, 96, 96]
    P = torch.from_numpy(np.asarray(samples["targets"], np.float32)).to(device)
    Q = torch.from_numpy(np.asarray(samples["mtcnn"], np.float32)).to(device)
    tr = torch.from_numpy(np.flatnonzero(~is_val)).to(device)
    va = torch.from_numpy(np.flatnonzero(is_val)).to(device)
    eye = torch.eye(2, device=device).expand(len(va), 2, 2)
    zero = torch.zeros(len(va), 2, device=device)
    Yva, Qva = _to_net_frame(P[va], eye, zero), _to_net_frame(Q[va], eye, zero)
    m = (STORE_SIZE - CROP) // 2
    Xva = X[va, :, m:m + CROP, m:m + CROP].float() / 255  # MTCNN's framing: the stored crop's centre
    net = new_quadnet(width).to(device)
    with torch.no_grad():
        net.template.copy_(_to_net_frame(P[tr], torch.eye(2, device=device).expand(len(tr), 2, 2),
                                         torch.zeros(len(tr), 2, device=device)).mean(0))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 200) * 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0))))

    def predict(x):
        net.eval()
        with torch.no_grad():
            p = torch.cat([net(x[i:i + 2048]) for i in range(0, len(x), 2048)])
        net.train()
        return p

    t0 = time.perf_counter()
    for step in range(steps):
        idx = tr[torch.randint(len(tr), (batch,), generator=gen, device=device)]
        theta, A, t = _frames(batch, jitter, gen, device)
        grid = F.affine_grid(theta, (batch, 1, CROP, CROP), align_corners=False)
        x = F.grid_sample(X[idx].float() / 255, grid, mode="bilinear", padding_mode="border", align_corners=False)
        y = _to_net_frame(P[idx], A, t)
        flip = torch.rand(batch, generator=gen, device=device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        y = torch.where(flip[:, None], mirror_targets(y), y)
        rnd = lambda *shape: torch.randn(*shape, generator=gen, device=device)  # noqa: E731
        mean = x.mean((1, 2, 3), keepdim=True)
        x = (x - mean) * torch.exp(0.25 * rnd(batch, 1, 1, 1)) + mean * torch.exp(0.2 * rnd(batch, 1, 1, 1))
        blur = torch.rand(batch, generator=gen, device=device) < 0.2  # a 3x3 box blur on some
        xb = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        x = torch.where(blur[:, None, None, None], xb, x)
        x = (x + 0.02 * rnd(*x.shape) * torch.rand(batch, 1, 1, 1, generator=gen, device=device)).clamp(0, 1)
        loss = (net(x) - y).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log_every and (step + 1) % log_every == 0:
            err = (predict(Xva) - Yva).abs().mean().item() if len(va) else float("nan")
            log.info("step %d/%d loss %.5f held-out L1 %.5f (%.0f s)", step + 1, steps, loss.item(), err,
                     time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    pred = predict(Xva)
    # The net as used: averaged with its prediction on the mirrored crop.
    pm = predict(Xva.flip(3)).double().cpu().numpy()
    pred2 = 0.5 * (pred.double().cpu().numpy() + mirror_targets(pm))
    Yn, Qn = Yva.double().cpu().numpy(), Qva.double().cpu().numpy()
    rec = {"faces": n, "val_faces": int(len(va)), "steps": steps, "batch": batch, "lr": lr, "jitter": jitter,
           "width": width,
           "seed": seed, "seconds": round(seconds, 1), "device": str(device),
           "val_l1_mtcnn_calibrated": round(float(np.abs(Qn - Yn).mean()), 5),
           "val_l1_quadnet": round(float(np.abs(pred2 - Yn).mean()), 5),
           **agreement(Qn, Yn, "mtcnn_calibrated"), **agreement(pred2, Yn, "quadnet")}
    return net.cpu().eval(), rec


def run_quadnet_job(out, *, datasets=None, per_source: int = 0, samples=None, workers: int = 2, steps: int = 18000,
                    batch: int = 256, lr: float = 2e-3, jitter: float = 1.0, width: int = 40, seed: int = 0,
                    device: str = "cpu", progress=None) -> dict:
    """The whole ``faceedit train-quadnet`` job: crops (read from ``samples`` if that file exists,
    else extracted from the TRAIN photos and written there), training, and
    ``out/quadnet.safetensors`` (fp16) with ``out/quadnet.json``. Returns the training record."""
    import io
    import json
    from pathlib import Path

    from faceedit.core.files import atomic_write_bytes, atomic_write_text
    from faceedit.core.tensorfile import write_tensor_file

    from .dataset import list_sources

    if samples and Path(samples).is_file():
        with np.load(samples, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        failed = None
    else:
        if datasets is None:
            raise TrainingError("no --samples file to read: pass the shared datasets folder to extract the crops")
        recs = list_sources(datasets)["train"]
        if per_source:
            rng = np.random.default_rng(seed)
            picked = []
            for src in ("celeba10k/", "utkface/"):
                lst = [r for r in recs if r["name"].startswith(src)]
                picked += [lst[i] for i in sorted(rng.choice(len(lst), min(per_source, len(lst)), replace=False))]
            recs = picked
        data = extract_samples(recs, workers=workers, progress=progress)
        failed = len(data.pop("failed"))
        if samples:
            buf = io.BytesIO()
            np.savez(buf, **data)
            atomic_write_bytes(samples, buf.getvalue())
    net, rec = train_quadnet(data, steps=steps, batch=batch, lr=lr, jitter=jitter, width=width, seed=seed,
                             device=device)
    rec.update(photos_failed=failed, what="QuadNet (faceedit.alignment.quadnet), fitted on TRAIN-split CelebA and "
               "UTKFace faces only", made_by="faceedit train-quadnet")
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in net.state_dict().items()}
    out = Path(out)
    write_tensor_file(out / "quadnet.safetensors", state, {"record": json.dumps(rec)})
    atomic_write_text(out / "quadnet.json", json.dumps(rec, indent=1) + "\n")
    return rec


def agreement(points: np.ndarray, targets: np.ndarray, name: str) -> dict:
    """Share of faces whose FFHQ quad from ``points`` [N, 8] agrees with the targets' (``alignment.ffhq.quads_agree``)
    and the spread of the side ratio."""
    from faceedit.alignment.ffhq import quad_difference, quads_agree

    d = np.array([quad_difference(np.reshape(t, (4, 2)), np.reshape(p, (4, 2))) for p, t in zip(points, targets)])
    if not len(d):
        return {}
    return {f"val_agree_{name}": round(float(quads_agree(d).mean()), 4),
            f"val_side_ratio_sd_{name}": round(float(d[:, 1].std()), 4)}
