"""bench/scripts/quad_sizes.py: the quad side it reports for the data-resolution question (#17)."""
import math

import numpy as np
import pytest


def test_quad_side_is_the_crop_side_for_any_rotation_and_scale(bench_script):
    qs = bench_script("quad_sizes")
    rng = np.random.default_rng(0)
    unit = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float64)
    for _ in range(20):
        side, angle = rng.uniform(10, 500), rng.uniform(0, 2 * math.pi)
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        quad = unit @ rot.T * side + rng.uniform(-1000, 1000, 2)
        assert qs.quad_side(quad) == pytest.approx(side, rel=1e-12)
    # a rectangle's mean edge is the mean of its sides: the crop is square, a skewed quad is averaged
    assert qs.quad_side(unit * [40.0, 60.0]) == pytest.approx(50.0)
