"""Build the aligned 64 px face packs (train and test) from UTKFace and CelebA.

Sources (``../shared/datasets``, read-only) and the project's test split (its README):

* CelebA ``celeba10k/000001.jpg``-``010000.jpg`` (89x109, ``img_align_celeba`` halved):
  ``000001``-``009000`` train, ``009001``-``010000`` test; labels: the 40 attributes of
  ``list_attr_celeba_first20k.txt``.
* UTKFace ``utkface/AGE_GENDER_RACE_DATETIME.jpg.chip.jpg`` (200x200 chips): all file
  names sorted by Python's string order, index ``i % 20 == 0`` is test; labels: age,
  gender (0 male, 1 female), race (0-4). Names that do not parse (5 in the set) are
  reported and left out of both packs (their position still counts for the split).

Every photo is aligned with ``faceedit.alignment.align(..., recipe=FACES64,
face='largest')`` -- dlib HOG detection (upsampling picked by image size), 68 landmarks,
the FFHQ quad at 0.6x its size, 64 px -- in worker processes; photos where no face is
found are counted and listed. The crops are JPEG-encoded at the highest quality
(from 95 down in steps of 1) that keeps the train pack under ``max_mib`` (a size budget
for moving the pack to where training runs); the test pack uses the same quality.

Why FACES64 (FFHQ geometry at 0.6x the quad): ENVIRONMENT.md measured that the full
FFHQ quad is ~1.6x a UTKFace chip (64% of the crop would be reflect padding) while at
0.6x only ~17% is padding and CelebA's quad lies inside its images; the faces keep FFHQ's
eye/mouth placement, so inversion of any photo uses the same recipe.

Outputs in ``out``: ``faces64_train.npz``, ``faces64_test.npz`` (``core.pack``
format), ``faces64_stats.json`` (counts, failures, quality, sizes), ``faces64_stats.md``
(the same, readable) and ``faces64_contact.png`` (a contact sheet of random train faces,
decoded from the pack so JPEG artefacts show).
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path

import numpy as np

from faceedit.core.errors import TrainingError

log = logging.getLogger(__name__)

UTK_PATTERN = re.compile(r"(\d+)_([01])_([0-4])_(\d+)\.jpg\.chip\.jpg")
CELEBA_TEST_FIRST = 9001
CELEBA_LAST = 10000
SOURCE_CELEBA, SOURCE_UTK = 0, 1


def _records_utkface(root: Path) -> tuple:
    """``(records, malformed_names)``; each record is a dict with path, name, split and labels."""
    names = sorted(p.name for p in root.iterdir() if p.is_file() and p.name.lower().endswith(".jpg"))
    recs, bad = [], []
    for i, n in enumerate(names):
        split = "test" if i % 20 == 0 else "train"
        m = UTK_PATTERN.fullmatch(n)
        if m is None:
            bad.append({"name": n, "split": split})
            continue
        recs.append({"path": str(root / n), "name": f"utkface/{n}", "split": split, "source": SOURCE_UTK,
                     "age": float(m.group(1)), "gender": int(m.group(2)), "race": int(m.group(3))})
    return recs, bad


def read_celeba_attributes(path: Path) -> tuple:
    """``(attribute names, {file name: int8 [40]})`` from the official CelebA attribute file."""
    with open(path) as f:
        f.readline()  # total count of the full set
        attr_names = f.readline().split()
        table = {}
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if len(parts) != len(attr_names) + 1:
                raise TrainingError(f"{path}: row {parts[0]!r} has {len(parts) - 1} values for {len(attr_names)} "
                                    f"attributes")
            table[parts[0]] = np.array([int(v) for v in parts[1:]], np.int8)
    return attr_names, table


def _records_celeba(root: Path) -> tuple:
    attr_names, table = read_celeba_attributes(root / "list_attr_celeba_first20k.txt")
    recs = []
    for k in range(1, CELEBA_LAST + 1):
        n = f"{k:06d}.jpg"
        p = root / n
        if not p.is_file():
            continue
        recs.append({"path": str(p), "name": f"celeba10k/{n}", "split": "test" if k >= CELEBA_TEST_FIRST else "train",
                     "source": SOURCE_CELEBA, "attrs": table.get(n)})
    return recs, attr_names


def list_sources(datasets_dir) -> dict:
    """All photos with split and labels:
    ``{"train": [...], "test": [...], "malformed": [...], "attr_names": [...]}``."""
    root = Path(datasets_dir)
    for sub in ("utkface", "celeba10k"):
        if not (root / sub).is_dir():
            raise FileNotFoundError(f"{root / sub} is missing; pass --datasets pointing at ../shared/datasets")
    utk, bad = _records_utkface(root / "utkface")
    cel, attr_names = _records_celeba(root / "celeba10k")
    recs = cel + utk
    return {"train": [r for r in recs if r["split"] == "train"], "test": [r for r in recs if r["split"] == "test"],
            "malformed": bad, "attr_names": attr_names}


# --------------------------------------------------------------------------- alignment workers


def init_worker():
    """Pool initializer: one thread per worker process (OpenMP and OpenCV), so workers share the cores.

    The signals are the alignment workers' (``alignment.background.worker_signals``): a forked
    worker inherits the CLI's SIGTERM-as-Ctrl-C handler, and ``Pool.terminate`` (the pool's
    ``with`` exit) ends its workers by SIGTERM, so under that handler a worker could outlive it
    and the pool's join wait for ever (seen once at the end of a full ``faceedit dataset build``).
    """
    from faceedit.alignment.background import worker_signals

    worker_signals()
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover
        pass


def align_file(path: str, recipe_dict: dict) -> tuple:
    """``(crop uint8 [S, S, 3] or None, reason)`` for one photo (largest face)."""
    from faceedit.alignment import align
    from faceedit.alignment.types import AlignmentRecipe
    from faceedit.core.images import load_image

    try:
        img = load_image(path)
        faces = align(img, recipe=AlignmentRecipe.from_dict(recipe_dict), face="largest")
        return faces[0].crop, ""
    except Exception as e:  # noqa: BLE001 - every failure is counted and reported by kind
        return None, f"{type(e).__name__}: {str(e)[:200]}"


def _align_task(args):
    return align_file(*args)


def align_records(records: list, recipe, workers: int = 2, progress: bool = False) -> tuple:
    """Align every record; returns ``(crops list with None for failures, reasons list)``."""
    tasks = [(r["path"], recipe.to_dict()) for r in records]
    if workers <= 1:
        out = [align_file(*t) for t in _maybe_tqdm(tasks, progress)]
    else:
        import multiprocessing as mp

        ctx = mp.get_context("fork" if hasattr(os, "fork") else "spawn")
        with ctx.Pool(workers, initializer=init_worker) as pool:
            out = list(_maybe_tqdm(pool.imap(_align_task, tasks, chunksize=32), progress, total=len(tasks)))
    return [c for c, _ in out], [r for _, r in out]


def _maybe_tqdm(it, on, total=None):
    if not on:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, unit="face", disable=None)


# --------------------------------------------------------------------------- packing


def encode_jpegs(crops: list, quality: int) -> list:
    """Baseline JPEG with optimised Huffman tables (about 25% smaller than the standard
    tables at 64 px, where the tables are a large part of each file), 4:2:0 chroma."""
    import cv2

    out = []
    for c in crops:
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(c[:, :, ::-1]),
                               [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_OPTIMIZE, 1])
        if not ok:
            raise RuntimeError("OpenCV could not encode a JPEG")
        out.append(buf.tobytes())
    return out


def pack_labels(records: list, attr_names: list) -> dict:
    """Label arrays in the pack's conventions (see ``core.pack``)."""
    n = len(records)
    labels = {a: np.zeros(n, np.int8) for a in attr_names}
    age = np.full(n, np.nan, np.float32)
    gender = np.full(n, -1, np.int8)
    race = np.full(n, -1, np.int8)
    source = np.zeros(n, np.int8)
    for i, r in enumerate(records):
        source[i] = r["source"]
        if r.get("attrs") is not None:
            for j, a in enumerate(attr_names):
                labels[a][i] = r["attrs"][j]
        if "age" in r:
            age[i], gender[i], race[i] = r["age"], r["gender"], r["race"]
    labels.update(age=age, gender=gender, race=race, source=source)
    return labels


def _pack_bytes_estimate(jpegs: list, names: list, labels: dict) -> int:
    width = max((len(n) for n in names), default=1)
    return sum(len(j) for j in jpegs) + 8 * (len(jpegs) + 1) + 4 * width * len(names) + \
        sum(np.asarray(v).nbytes for v in labels.values()) + 8192 + 512 * len(labels)


def choose_quality(crops: list, names: list, labels: dict, max_bytes: int, qualities=range(95, 19, -1)) -> tuple:
    """Highest JPEG quality whose pack stays under ``max_bytes``: ``(quality, jpegs)``."""
    qs = list(qualities)
    # Size falls monotonically with quality: bisect over the candidate list.
    lo, hi, best = 0, len(qs) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        jp = encode_jpegs(crops, qs[mid])
        if _pack_bytes_estimate(jp, names, labels) <= max_bytes:
            best, hi = (qs[mid], jp), mid - 1
        else:
            lo = mid + 1
    if best is None:
        raise TrainingError(f"even JPEG quality {qs[-1]} does not fit {max_bytes / 2**20:.1f} MiB; raise --max-mib")
    return best


def contact_sheet(pack_path, n: int = 256, seed: int = 0) -> np.ndarray:
    """A grid of ``n`` random faces decoded from a pack."""
    from faceedit.core.images import make_grid
    from faceedit.core.pack import Pack

    pack = Pack(pack_path)
    idx = np.random.default_rng(seed).choice(len(pack), size=min(n, len(pack)), replace=False)
    return make_grid(pack.images(sorted(idx)), cols=16, pad=1)


def _cached_alignment(cache, prefix, split, recs, recipe, workers, progress) -> tuple:
    """Align ``recs`` or reuse an earlier run's crops from ``cache`` (same photos, same recipe)."""
    names = [r["name"] for r in recs]
    path = None if cache is None else Path(cache) / f"{prefix}_{split}_aligned.npz"
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta["names"] == names and meta["recipe"] == recipe.to_dict():
                log.info("reusing %d aligned %s crops from %s", int(z["crops"].shape[0]), split, path)
                it = iter(z["crops"])
                return [next(it) if ok else None for ok in meta["ok"]], meta["reasons"]
    log.info("aligning %d %s photos with %d workers", len(recs), split, workers)
    crops, reasons = align_records(recs, recipe, workers=workers, progress=progress)
    if path is not None:
        import io

        from faceedit.core.files import atomic_write_bytes

        good = [c for c in crops if c is not None]
        buf = io.BytesIO()
        np.savez(buf, crops=np.stack(good) if good else np.zeros((0, recipe.size, recipe.size, 3), np.uint8),
                 meta=np.array(json.dumps({"names": names, "recipe": recipe.to_dict(),
                                           "ok": [c is not None for c in crops], "reasons": reasons})))
        atomic_write_bytes(path, buf.getvalue())
    return crops, reasons


def build_dataset(out, datasets_dir, *, recipe=None, workers: int = 2, max_mib: float = 44.0,
                  limit: int | None = None, progress: bool = False, prefix: str = "faces64",
                  cache=None) -> dict:
    """Align, encode and pack the train and test splits; write the report and contact sheet.

    Args:
        out: output folder (e.g. ``packs``).
        datasets_dir: ``../shared/datasets``.
        recipe: alignment recipe (default ``FACES64``).
        workers: alignment processes.
        max_mib: size cap of the train pack (JPEG quality is chosen to meet it).
        limit: use only every k-th photo so that about ``limit`` photos per split are
            processed (quick builds and tests); None = all.
        progress: tqdm bars.
        prefix: file-name prefix.
        cache: folder for the raw aligned crops (reused when the photos and recipe are the
            same, so a re-pack at another size skips alignment); keep it out of ``out``,
            so ``out`` holds only the packs and their reports.
    Returns:
        the statistics dict (also written as ``{prefix}_stats.json``).
    """
    from faceedit.alignment.types import FACES64
    from faceedit.core.files import atomic_write_text
    from faceedit.core.images import save_image
    from faceedit.core.pack import Pack, write_pack

    recipe = recipe or FACES64
    out = Path(out)
    t0 = time.time()
    src = list_sources(datasets_dir)
    stats = {"recipe": recipe.to_dict(), "datasets": str(datasets_dir), "workers": workers,
             "malformed_utkface_names": src["malformed"], "splits": {}}
    crops_by_split = {}
    for split in ("train", "test"):
        recs = src[split]
        if limit is not None and len(recs) > limit:
            step = int(np.ceil(len(recs) / limit))
            recs = recs[::step]
        crops, reasons = _cached_alignment(cache, prefix, split, recs, recipe, workers, progress)
        kept = [(r, c) for r, c in zip(recs, crops) if c is not None]
        failures = [{"name": r["name"], "reason": why} for r, c, why in zip(recs, crops, reasons) if c is None]
        kinds = {}
        for f in failures:
            k = f["reason"].split(":")[0]
            kinds[k] = kinds.get(k, 0) + 1
        per_source = {}
        for src_name, sid in (("celeba", SOURCE_CELEBA), ("utkface", SOURCE_UTK)):
            tried = sum(r["source"] == sid for r in recs)
            ok = sum(r["source"] == sid for r, _ in kept)
            per_source[src_name] = {"photos": tried, "aligned": ok, "failed": tried - ok}
        stats["splits"][split] = {"photos": len(recs), "aligned": len(kept), "failed": len(failures),
                                  "per_source": per_source, "failure_kinds": kinds, "failures": failures}
        crops_by_split[split] = kept
    if not crops_by_split["train"]:
        raise TrainingError("no training face could be aligned; check the alignment models (faceedit align --help)")

    meta_base = {"recipe": recipe.to_dict(), "sources": "UTKFace aligned&cropped chips + CelebA img_align_celeba "
                 "(images 1-10000, halved)", "license": "non-commercial research only (UTKFace, CelebA terms)",
                 "split_rule": "CelebA 009001-010000 test; UTKFace sorted names, index % 20 == 0 test"}
    quality, sizes = None, {}
    for split in ("train", "test"):
        kept = crops_by_split[split]
        if not kept:
            continue
        recs = [r for r, _ in kept]
        crops = [c for _, c in kept]
        names = [r["name"] for r in recs]
        labels = pack_labels(recs, src["attr_names"])
        if split == "train":
            quality, jpegs = choose_quality(crops, names, labels, int(max_mib * 2 ** 20))
        else:
            jpegs = encode_jpegs(crops, quality)
        meta = {**meta_base, "split": split, "count": len(jpegs), "jpeg_quality": quality,
                "counts": stats["splits"][split]["per_source"]}
        path = write_pack(out / f"{prefix}_{split}.npz", jpegs, labels, names, meta)
        sizes[split] = path.stat().st_size
        while split == "train" and sizes[split] > max_mib * 2 ** 20:  # the estimate was short: step down
            if quality <= 10:
                raise TrainingError(f"{path} is {sizes[split] / 2**20:.2f} MiB even at JPEG quality {quality}, "
                                    f"over {max_mib}; raise --max-mib")
            quality -= 1
            jpegs = encode_jpegs(crops, quality)
            meta["jpeg_quality"] = quality
            path = write_pack(out / f"{prefix}_{split}.npz", jpegs, labels, names, meta)
            sizes[split] = path.stat().st_size
        if len(Pack(path)) != len(jpegs):
            raise RuntimeError(f"{path} does not read back")
    stats.update(jpeg_quality=quality, pack_mib={k: round(v / 2 ** 20, 2) for k, v in sizes.items()},
                 seconds=round(time.time() - t0, 1))
    save_image(out / f"{prefix}_contact.png", contact_sheet(out / f"{prefix}_train.npz"))
    atomic_write_text(out / f"{prefix}_stats.json", json.dumps(stats, indent=1))
    atomic_write_text(out / f"{prefix}_stats.md", stats_markdown(stats))
    return stats


def stats_markdown(stats: dict) -> str:
    """The human-readable report."""
    lines = [f"# Face packs ({stats['recipe']['name']}, {stats['recipe']['size']} px)", "",
             f"JPEG quality {stats.get('jpeg_quality')}; sizes (MiB): {stats.get('pack_mib')}; "
             f"built in {stats.get('seconds')} s with {stats['workers']} workers.", "",
             "| split | source | photos | aligned | failed |", "| --- | --- | --- | --- | --- |"]
    for split, s in stats["splits"].items():
        for src, c in s["per_source"].items():
            lines.append(f"| {split} | {src} | {c['photos']} | {c['aligned']} | {c['failed']} |")
        lines.append(f"| {split} | all | {s['photos']} | {s['aligned']} | {s['failed']} |")
    lines += ["", "Failure kinds: " + "; ".join(f"{k} {json.dumps(s['failure_kinds'])}" for k,
                                                s in stats["splits"].items()),
              "", "Malformed UTKFace names (left out of both packs): "
              + ", ".join(f"`{m['name']}` ({m['split']})" for m in stats["malformed_utkface_names"]), ""]
    return "\n".join(lines)
