"""The lesson's fast pictures (PIL canvas): text never below the projector minimum, presenter mode larger,
degenerate bars drawn, and the cells of the score map coloured by the scores themselves."""
from __future__ import annotations

import numpy as np

from attention.lesson.figure import MIN_TEXT_PX, PRESENTER_SCALE, Canvas, colorize, nice_ticks


def test_no_text_below_the_minimum_and_presenter_text_is_20_px():
    c = Canvas(100, 50)
    assert c.font(6).size == MIN_TEXT_PX >= 14
    assert c.font(17).size == 17
    p = Canvas(100, 50, PRESENTER_SCALE)
    assert p.font(6).size >= 20 and p.image.size == (140, 70)


def test_zero_height_and_reversed_rectangles_are_drawn():
    c = Canvas(40, 40)
    c.rect(5, 10, 15, 10, fill=(255, 0, 0))          # a bar of height 0 (a weight of 0)
    c.rect(30, 30, 20, 20, fill=(0, 0, 255))          # corners given in reverse order
    a = c.to_array()
    assert (a[10, 5:15] == (255, 0, 0)).all() and (a[20:30, 20:30] == (0, 0, 255)).all()


def test_colorize_follows_the_matplotlib_colormap():
    import matplotlib
    v = np.array([-2.0, 0.0, 1.0, 2.0])
    got = colorize(v, "coolwarm", -2.0, 2.0).astype(int)
    want = (np.asarray(matplotlib.colormaps["coolwarm"]((v + 2) / 4))[:, :3] * 255).round().astype(int)
    assert np.abs(got - want).max() <= 3             # the 256-entry table: within one step


def test_ticks_are_round_and_cover_the_range():
    for lo, hi in ((-2.3, 2.3), (0.0, 0.043), (0.0, 37.0), (-17.4, 13.4)):
        t = np.array(nice_ticks(lo, hi, 4))
        step = np.diff(t)
        assert len(t) >= 2 and (t >= lo - 1e-12).all() and (t <= hi + 1e-12).all()
        assert np.allclose(step, step[0])
        mantissa = step[0] / 10 ** np.floor(np.log10(step[0]))
        # the smallest round step (1, 2, 2.5 or 5 x 10^k) that gives at most 4 intervals over the range
        assert min(abs(mantissa - m) for m in (1, 2, 2.5, 5, 10)) < 1e-9 and step[0] >= (hi - lo) / 4 - 1e-12


def test_score_map_cells_carry_the_scores_colour(tmp_path):
    """Each cell of the scores picture shows colorize(score) blended over the input (alpha 0.6): on a black
    input, the cell centre (away from its printed number) is 0.6 x the colormap colour of that score."""
    from types import SimpleNamespace

    from attention.lesson.query_pictures import MAP_SIZE, token_map_picture
    scores = np.linspace(-3, 3, 16)
    step = SimpleNamespace(patch_grid=lambda v: np.asarray(v).reshape(4, 4), prefix_values=lambda v: {},
                           query=0, layout=SimpleNamespace(num_prefix=1), token_name=lambda j: f"t{j}")
    view = np.zeros((64, 64, 3), np.uint8)
    pic = token_map_picture(step, view, scores, cmap="coolwarm", title="scores", vmin=-3, vmax=3)
    top, cell = 34, MAP_SIZE / 4
    for r in range(4):
        for k in range(4):
            y, x = int(top + r * cell + cell * 0.15), int(10 + k * cell + cell * 0.15)   # a corner, not the text
            want = 0.6 * colorize(scores[r * 4 + k], "coolwarm", -3, 3).astype(float)
            assert np.abs(pic[y, x].astype(float) - want).max() <= 2, (r, k)
