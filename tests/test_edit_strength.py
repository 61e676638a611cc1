"""The default edit strength: one constant for the CLI and the Pipeline, chosen by
``bench/scripts/edit_strength.py``, whose measuring functions are checked here on known images."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from faceedit.alignment.types import FACES64, AlignedFace
from faceedit.defaults import DEFAULT_STRENGTH
from faceedit.pipeline import with_default_strength

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench(bench_script):
    return bench_script("edit_strength")


def test_cli_option_default_is_the_constant():
    from faceedit.cli.edit import edit

    (opt,) = [p for p in edit.params if p.name == "strength"]
    assert opt.default == DEFAULT_STRENGTH


def test_pipeline_names_alone_get_the_default():
    from faceedit.editing import Direction

    assert with_default_strength("smile") == {"smile": DEFAULT_STRENGTH}
    assert with_default_strength(["smile", "age|male"]) == {"smile": DEFAULT_STRENGTH, "age|male": DEFAULT_STRENGTH}
    assert with_default_strength({"smile": -1.5}) == {"smile": -1.5}
    assert with_default_strength([("smile", 0.5)]) == {"smile": 0.5}
    d = Direction.from_vector(torch.ones(1, 4), space="w", attribute="smile", model_id="tiny@0", num_ws=2)
    assert with_default_strength(d) == {d: DEFAULT_STRENGTH}


def test_pipeline_edit_uses_the_default_on_the_shipped_model():
    from faceedit.inversion.latent import Latent
    from faceedit.pipeline import Pipeline

    pipe = Pipeline("faces64", device="cpu")
    G = pipe.G
    lat = Latent(space="w+", codes=torch.zeros(1, G.num_ws, G.w_dim), model_id=pipe.model_id)
    named = pipe.edit(lat, "smile")
    explicit = pipe.edit(lat, {"smile": DEFAULT_STRENGTH})
    assert named.meta["edits"][-1]["strength"] == DEFAULT_STRENGTH
    assert torch.equal(named.codes, explicit.codes) and named.codes.abs().sum() > 0


def test_shipped_default_is_the_benchmarks_choice(bench):
    res = json.loads((REPO / "bench" / "results" / "edit_strength" / "strength.json").read_text())
    assert res["chosen"]["strength"] == DEFAULT_STRENGTH
    # the choice follows the rule over the rows recorded beside it
    rows = [r for r in res["rows"] if r["model"] == bench.CHOOSE_MODEL and r["split"] == bench.CHOOSE_SPLIT]
    assert bench.choose_strength(rows)["strength"] == DEFAULT_STRENGTH


def test_mask_figures_on_known_images(bench):
    a = np.full((8, 8, 3), 100, np.uint8)
    b = a.copy()
    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True                       # 16 pixels
    b[2:4, 2:6] = (109, 100, 100)               # 8 of them: one channel +9 -> mean 3, "changed"
    b[4:6, 2:6] = (108, 108, 108)               # 8 of them: all channels +8 -> mean 8, not "changed" (> 8)
    b[0, 0] = (0, 0, 0)                         # outside the mask: ignored by the in-mask figures
    assert bench.mask_mean_change(b, a, mask) == pytest.approx((8 * 3 + 8 * 8) / 16)
    assert bench.changed_share(b, a, mask) == pytest.approx(0.5)
    assert bench.max_change(b, a) == 100
    assert np.isnan(bench.mask_mean_change(a, b, np.zeros((8, 8), bool)))
    with pytest.raises(ValueError):
        bench.mask_mean_change(a, b[:4], mask)


def test_crop_mask_maps_the_landmark_hull_into_the_crop(bench):
    # landmarks on a square 20.4..39.6 in a photo; the matrix halves and shifts: 5.2..14.8 in a 32 px
    # crop, which holds the centres (i + 0.5) of pixels 5..14
    side = np.linspace(20.4, 39.6, 17)
    lo, hi = np.full(17, 20.4), np.full(17, 39.6)
    lm = np.concatenate([np.c_[side, lo], np.c_[side, hi], np.c_[lo, side], np.c_[hi, side]])
    m = np.array([[0.5, 0, -5], [0, 0.5, -5], [0, 0, 1]], np.float64)
    face = AlignedFace(crop=np.zeros((32, 32, 3), np.uint8), matrix=m, quad=np.zeros((4, 2)), landmarks=lm,
                       score=1.0, source_size=(64, 64), index=0, detector="test", recipe=FACES64)
    mask = bench.crop_mask(face, 32)
    ys, xs = np.nonzero(mask)
    assert mask.sum() == 100 and (xs.min(), xs.max(), ys.min(), ys.max()) == (5, 14, 5, 14)


def test_choose_strength_rule(bench):
    def rows(means, ids):
        return [{"strength": float(s), "mask_mean": m, "id_rec_median": i} for s, m, i in zip(range(5), means, ids)]

    ok = bench.choose_strength(rows([0, 3, 6.5, 9, 12], [0, .1, .2, .3, .4]))
    assert ok["strength"] == 2.0 and ok["met"]
    far = bench.choose_strength(rows([0, 3, 6.5, 9, 12], [0, .1, .7, .8, .9]))
    assert far["strength"] == 1.0 and not far["met"]
    weak = bench.choose_strength(rows([0, 1, 2, 3, 4], [0, .1, .2, .3, .4]))
    assert weak["strength"] == 4.0 and not weak["met"]
