"""The attribute network: a small CNN that scores 64 px aligned faces, and its scorer API.

One network, one forward pass, three kinds of output:

* 40 logits for CelebA's binary attributes (``Smiling``, ``Male``, ``Young``, ...);
* ``female``: the logit of P(female), trained on UTKFace's gender label and on CelebA's
  ``Male`` attribute (negated);
* ``age``: years, a regression trained on UTKFace's age label.

Its 256-d pooled features (before the heads) are the feature space of the
distribution metrics (:mod:`faceedit.metrics.distribution`): "FD-attr", "KID-attr" and
precision/recall there are measured in *this* network's features and are not
comparable to Inception-based FID/KID.

Convention: images enter as ``[N, H, W, 3]`` RGB uint8 or as ``[N, 3, H, W]`` float
tensors in ``[-1, 1]`` (the generator's output range). They should be aligned with the
``faces64`` recipe (:data:`faceedit.alignment.types.FACES64`); other sizes are resized
to 64 px with an anti-aliased bilinear filter.

The weights ship as ``checkpoints/weights/scorers/attrnet.safetensors`` (fp16) with a
JSON card beside it (``attrnet.json``); they are trained by ``faceedit train-scorers``
(``faceedit.training.attributes``).
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from faceedit.core.errors import FaceeditError, MetricsError

log = logging.getLogger(__name__)

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)
INPUT_SIZE = 64
WEIGHTS_NAME = "attrnet.safetensors"
CARD_NAME = "attrnet.json"
AGE_SCALE = 10.0  # the age head predicts years / AGE_SCALE


class ScorerNotFoundError(FaceeditError, FileNotFoundError):
    """The attribute network's weights are not on this machine."""


# ---------------------------------------------------------------------------------------------
# The network


class _ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(y)))


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class AttrNet(nn.Module):
    """A small ResNet for 64 px faces (about 2.5 M parameters, 0.3 GMAC per image at width 32).

    Args:
        width: channels of the stem; stages use 2x, 4x, 8x, 8x.
        num_attrs: binary attribute heads (CelebA's 40).
        dropout: dropout on the pooled features before the heads (training only).
    """

    def __init__(self, width: int = 32, num_attrs: int = len(CELEBA_ATTRIBUTES), dropout: float = 0.2):
        super().__init__()
        w = int(width)
        self.config = {"width": w, "num_attrs": int(num_attrs), "dropout": float(dropout)}
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.stages = nn.Sequential(
            _down(w, 2 * w), _ResBlock(2 * w),          # 32 px
            _down(2 * w, 4 * w), _ResBlock(4 * w),      # 16 px
            _down(4 * w, 8 * w), _ResBlock(8 * w),      # 8 px
            _down(8 * w, 8 * w), _ResBlock(8 * w),      # 4 px
        )
        self.feature_dim = 8 * w
        self.num_attrs = int(num_attrs)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(self.feature_dim, self.num_attrs + 2)  # attrs, female, age

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, 64, 64]`` in [-1, 1] -> pooled features ``[N, feature_dim]``."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise MetricsError(f"AttrNet expects [N, 3, H, W] images, got {tuple(x.shape)}")
        return self.stages(self.stem(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> tuple:
        """Returns ``(attr_logits [N, A], female_logit [N], age_scaled [N], features [N, F])``."""
        f = self.features(x)
        out = self.head(self.drop(f))
        return out[:, :self.num_attrs], out[:, self.num_attrs], out[:, self.num_attrs + 1], f


# ---------------------------------------------------------------------------------------------
# Image conversion


def to_input(images, device=None, size: int = INPUT_SIZE) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` / ``[H, W, 3]`` arrays, or ``[N, 3, H, W]`` tensors in [-1, 1] ->
    float ``[N, 3, size, size]`` in [-1, 1] on ``device``.

    Raises:
        ValueError: an array that is not RGB, or a float array (ambiguous range).
    """
    if isinstance(images, torch.Tensor):
        x = images
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1] != 3:
            raise MetricsError(f"image tensors must be [N, 3, H, W] in [-1, 1], got {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            raise MetricsError("a uint8 tensor is ambiguous; pass a numpy [N, H, W, 3] uint8 array or a "
                               "float tensor in [-1, 1]")
        x = x.float()
    else:
        a = np.asarray(images)
        if a.ndim == 3:
            a = a[None]
        if a.ndim != 4 or a.shape[-1] != 3:
            raise MetricsError(f"image arrays must be [N, H, W, 3] RGB uint8, got {a.shape}")
        if a.dtype != np.uint8:
            raise MetricsError(f"image arrays must be uint8 (got {a.dtype}); pass float images as a "
                               f"[N, 3, H, W] tensor in [-1, 1]")
        x = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 127.5 - 1
    if device is not None:
        x = x.to(device)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > size)
    return x


# ---------------------------------------------------------------------------------------------
# Weights on disk


def default_weights_path() -> Path:
    """Where the shipped weights are looked for: the package, then the user cache."""
    from faceedit.checkpoints.registry import WEIGHTS_DIR, cache_dir

    for base in (WEIGHTS_DIR / "scorers", cache_dir() / "scorers"):
        if (base / WEIGHTS_NAME).is_file():
            return base / WEIGHTS_NAME
    return WEIGHTS_DIR / "scorers" / WEIGHTS_NAME


def save_attrnet(path, net: AttrNet, card: dict) -> tuple:
    """Write ``net`` as fp16 safetensors (config in the metadata) and ``card`` as JSON beside it.

    Returns:
        ``(weights_path, card_path)``.
    """
    from faceedit.core.files import atomic_write_text
    from faceedit.core.tensorfile import write_tensor_file

    path = Path(path)
    sd = {k: (v.detach().to("cpu").half() if v.is_floating_point() else v.detach().to("cpu")).contiguous()
          for k, v in net.state_dict().items()}
    meta = {"format": "faceedit.attrnet", "version": "1", "config": json.dumps(net.config),
            "attributes": json.dumps(list(CELEBA_ATTRIBUTES[:net.num_attrs]))}
    write_tensor_file(path, sd, meta)
    card_path = path.with_suffix(".json")
    atomic_write_text(card_path, json.dumps(_finite(card), indent=2, sort_keys=False) + "\n")
    return path, card_path


def _finite(o):
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(o, dict):
        return {str(k): _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(o) else None
    if isinstance(o, np.integer):
        return int(o)
    return o


def load_attrnet(path) -> tuple:
    """Read weights written by :func:`save_attrnet`. Returns ``(net (eval, fp32), card dict)``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ScorerNotFoundError(
            f"attribute-network weights not found at {path}. Train them with `faceedit train-scorers "
            f"--train .gpu/data/faces64_train.npz --out DIR` and copy "
            f"DIR/{WEIGHTS_NAME} and DIR/{CARD_NAME} into {path.parent}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != "faceedit.attrnet":
        raise MetricsError(f"{path} is not a faceedit attribute network (metadata format={meta.get('format')!r})")
    net = AttrNet(**json.loads(meta["config"]))
    sd = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    net.load_state_dict(sd)  # strict: a mismatch is an error
    net.eval()
    card_path = path.with_suffix(".json")
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    return net, card


# ---------------------------------------------------------------------------------------------
# The scorer


class AttributeScorer:
    """Scores aligned 64 px faces with the attribute network.

    Example::

        scorer = AttributeScorer.load()
        s = scorer.scores(images)          # {'Smiling': P, ..., 'female': P, 'age': years}
        f = scorer.features(images)        # [N, 256] for FD-attr / KID-attr / precision-recall
    """

    def __init__(self, net: AttrNet, card: dict | None = None, device="cpu", path=None):
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.card = card or {}
        self.path = Path(path) if path is not None else None
        self.attributes = tuple(CELEBA_ATTRIBUTES[:net.num_attrs])
        self.names = self.attributes + ("female", "age")
        self.feature_dim = net.feature_dim

    @classmethod
    def load(cls, path=None, device="cpu") -> "AttributeScorer":
        """Load the shipped weights (or ``path``).

        Raises:
            ScorerNotFoundError: no weights; the message says how to train or place them.
        """
        p = Path(path) if path is not None else default_weights_path()
        net, card = load_attrnet(p)
        return cls(net, card, device=device, path=p)

    @property
    def sha256(self) -> str:
        from faceedit.core.files import sha256_file

        return sha256_file(self.path) if self.path is not None and self.path.is_file() else ""

    def _batches(self, images, batch_size: int):
        if not isinstance(images, torch.Tensor):
            images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        for i in range(0, len(images), batch_size):
            yield to_input(images[i:i + batch_size], device=self.device)

    def logits(self, images) -> dict:
        """Differentiable raw outputs for tensors in [-1, 1]: ``{'attrs': [N, A], 'female': [N],
        'age': [N] (years), 'features': [N, F]}`` (no batching, gradients kept)."""
        a, g, age, f = self.net(to_input(images, device=self.device))
        return {"attrs": a, "female": g, "age": age * AGE_SCALE, "features": f}

    @torch.no_grad()
    def scores(self, images, *, batch_size: int = 512, logits: bool = False) -> dict:
        """Score images.

        Args:
            images: uint8 ``[N, H, W, 3]`` or a float tensor ``[N, 3, H, W]`` in [-1, 1].
            batch_size: images per forward pass.
            logits: return logits instead of probabilities for the binary outputs.
        Returns:
            ``{name: float32 array [N]}`` for the 40 CelebA attributes, ``female`` and ``age`` (years).
        """
        outs = {k: [] for k in self.names}
        for x in self._batches(images, batch_size):
            a, g, age, _ = self.net(x)
            if not logits:
                a, g = torch.sigmoid(a), torch.sigmoid(g)
            a = a.float().cpu().numpy()
            for j, name in enumerate(self.attributes):
                outs[name].append(a[:, j])
            outs["female"].append(g.float().cpu().numpy())
            outs["age"].append((age.float() * AGE_SCALE).cpu().numpy())
        return {k: np.concatenate(v).astype(np.float32) if v else np.zeros(0, np.float32) for k, v in outs.items()}

    @torch.no_grad()
    def features(self, images, *, batch_size: int = 512) -> np.ndarray:
        """Pooled features ``[N, feature_dim]`` float32 (the space of FD-attr, KID-attr, precision/recall)."""
        fs = [self.net.features(x).float().cpu().numpy() for x in self._batches(images, batch_size)]
        return np.concatenate(fs) if fs else np.zeros((0, self.feature_dim), np.float32)

    @torch.no_grad()
    def scores_and_features(self, images, *, batch_size: int = 512) -> tuple:
        """Both in one pass: ``(scores dict (probabilities), features [N, F])``."""
        outs = {k: [] for k in self.names}
        fs = []
        for x in self._batches(images, batch_size):
            a, g, age, f = self.net(x)
            a = torch.sigmoid(a).float().cpu().numpy()
            for j, name in enumerate(self.attributes):
                outs[name].append(a[:, j])
            outs["female"].append(torch.sigmoid(g).float().cpu().numpy())
            outs["age"].append((age.float() * AGE_SCALE).cpu().numpy())
            fs.append(f.float().cpu().numpy())
        sc = {k: np.concatenate(v).astype(np.float32) if v else np.zeros(0, np.float32) for k, v in outs.items()}
        return sc, (np.concatenate(fs) if fs else np.zeros((0, self.feature_dim), np.float32))


# ---------------------------------------------------------------------------------------------
# Labels and evaluation (the card's figures)


def _norm(name: str) -> str:
    return name.lower().replace("celeba_", "").replace("-", "_")


def celeba_label_matrix(labels: dict, n: int) -> np.ndarray:
    """CelebA attributes from a pack's label dict as int8 ``[N, 40]`` (-1/1 known, 0 unknown).

    Accepts one array per attribute (``Smiling`` or ``celeba_smiling``, any case) or a single
    ``[N, 40]`` array under ``attrs``/``celeba``; attributes missing entirely are all 0.
    """
    for key in ("attrs", "celeba", "celeba_attrs"):
        if key in labels and np.asarray(labels[key]).ndim == 2:
            m = np.asarray(labels[key]).astype(np.int8)
            if m.shape != (n, len(CELEBA_ATTRIBUTES)):
                raise MetricsError(f"label {key!r} has shape {m.shape}, expected {(n, len(CELEBA_ATTRIBUTES))}")
            return m
    by = {_norm(k): k for k in labels}
    out = np.zeros((n, len(CELEBA_ATTRIBUTES)), np.int8)
    for j, a in enumerate(CELEBA_ATTRIBUTES):
        k = by.get(_norm(a))
        if k is not None:
            out[:, j] = np.sign(np.nan_to_num(np.asarray(labels[k], np.float32))).astype(np.int8)
    return out


def gender_targets(labels: dict, attrs: np.ndarray) -> np.ndarray:
    """Female target as float (1 female, 0 male, NaN unknown): UTKFace's ``gender`` (0 male /
    1 female), else CelebA's ``Male`` attribute negated."""
    n = len(attrs)
    g = np.full(n, np.nan, np.float32)
    male = attrs[:, CELEBA_ATTRIBUTES.index("Male")]
    g[male == 1] = 0.0
    g[male == -1] = 1.0
    if "gender" in labels:
        lg = np.asarray(labels["gender"]).astype(np.float32)
        known = (lg == 0) | (lg == 1)
        g[known] = lg[known]
    return g


def age_targets(labels: dict, n: int) -> np.ndarray:
    return np.asarray(labels["age"], np.float32) if "age" in labels else np.full(n, np.nan, np.float32)


AGE_BUCKETS = ((0, 10), (10, 20), (20, 30), (30, 45), (45, 60), (60, 200))
RACES = ("White", "Black", "Asian", "Indian", "Others")


def _auc(y, s):
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    if len(y) < 2 or y.min() == y.max():
        return float("nan")
    return float(roc_auc_score(y, s))


def evaluate_scores(scores: dict, labels: dict, *, min_positives: int = 5) -> dict:
    """The card's figures for one labelled set.

    Args:
        scores: :meth:`AttributeScorer.scores` output (probabilities).
        labels: a pack's label dict (CelebA attributes, ``age``, ``gender``, ``race``, ``source``).
        min_positives: an attribute's AUC is reported only with at least this many of each class.
    Returns:
        ``{"attributes": {name: {"auc", "positives", "negatives"}}, "mean_auc",
        "gender": {"auc", "n"}, "age": {"mae", "n"}, "groups": {...}}`` where groups hold age MAE
        and gender AUC per race, per gender and per age bucket (UTKFace labels).
    """
    n = len(scores["age"])
    attrs = celeba_label_matrix(labels, n)
    out = {"n": int(n), "attributes": {}}
    aucs = []
    for j, a in enumerate(CELEBA_ATTRIBUTES):
        known = attrs[:, j] != 0
        y = attrs[known, j] == 1
        pos, neg = int(y.sum()), int((~y).sum())
        auc = _auc(y, scores[a][known]) if min(pos, neg) >= min_positives else float("nan")
        out["attributes"][a] = {"auc": auc, "positives": pos, "negatives": neg}
        if not math.isnan(auc):
            aucs.append(auc)
    out["mean_auc"] = float(np.mean(aucs)) if aucs else float("nan")
    g = gender_targets(labels, attrs)
    gk = ~np.isnan(g)
    out["gender"] = {"auc": _auc(g[gk], scores["female"][gk]), "n": int(gk.sum())}
    age = age_targets(labels, n)
    ak = ~np.isnan(age)
    err = np.abs(scores["age"] - age)
    out["age"] = {"mae": float(err[ak].mean()) if ak.any() else float("nan"), "n": int(ak.sum())}

    groups = {}
    race = np.asarray(labels["race"]) if "race" in labels else np.full(n, -1)
    def _group(mask):
        m_age, m_g = mask & ak, mask & gk
        return {"n": int(mask.sum()),
                "age_mae": float(err[m_age].mean()) if m_age.any() else float("nan"),
                "gender_auc": _auc(g[m_g], scores["female"][m_g]) if m_g.sum() >= 2 else float("nan")}
    for r, name in enumerate(RACES):
        m = race == r
        if m.any():
            groups[f"race={name}"] = _group(m)
    for val, name in ((0.0, "male"), (1.0, "female")):
        m = (g == val) & ak  # gender groups among age-labelled (UTKFace) faces
        if m.any():
            groups[f"gender={name}"] = _group(m)
    for lo, hi in AGE_BUCKETS:
        m = ak & (np.nan_to_num(age, nan=-1) >= lo) & (np.nan_to_num(age, nan=-1) < hi)
        if m.any():
            groups[f"age={lo}-{hi if hi < 200 else ''}"] = _group(m)
    out["groups"] = groups
    return out


__all__ = ["AttrNet", "AttributeScorer", "CELEBA_ATTRIBUTES", "ScorerNotFoundError", "to_input",
           "save_attrnet", "load_attrnet", "evaluate_scores", "celeba_label_matrix", "gender_targets",
           "age_targets", "default_weights_path"]
