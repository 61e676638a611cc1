"""bench/scripts/edit_strips.py: the README figure's layout (the edits are the pipeline's, tested elsewhere)."""
import numpy as np


def test_tile_places_each_crop_at_its_attribute_row_and_strength_column(bench_script):
    s = bench_script("edit_strips")
    rows, cols, r, pad, label_w, title_h = 2, 3, 8, 4, 72, 16
    blocks = [np.zeros((rows, cols, r, r, 3), np.uint8) for _ in range(2)]
    for b, block in enumerate(blocks):
        for i in range(rows):
            for j in range(cols):
                block[i, j] = (10 * b + 1, i + 1, j + 1)  # a colour that names block, row and column
    fig = s.tile(blocks, ["a", "b"], ["smile", "age"], pad=pad, label_w=label_w, title_h=title_h)
    bw = cols * (r + pad)
    assert fig.shape == (title_h + rows * (r + pad), label_w + 2 * (bw + 3 * pad), 3)
    for b in range(2):
        for i in range(rows):
            for j in range(cols):
                y, x = title_h + i * (r + pad), label_w + b * (bw + 3 * pad) + j * (r + pad)
                assert (fig[y:y + r, x:x + r] == (10 * b + 1, i + 1, j + 1)).all()
    assert (fig[title_h:, label_w - 1] == 255).all()  # the gap between the labels and the first crops stays white
