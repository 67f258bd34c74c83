"""The lesson's fast pictures (PIL canvas): text never below the projector minimum, presenter mode larger,
degenerate bars drawn, and the cells of the score map coloured by the scores themselves."""
from __future__ import annotations

import numpy as np
import pytest

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


# --------------------------------------------------------------------------- the lesson's matplotlib figures

def _drawn(monkeypatch):
    """Record (smallest text px, (height, width)) of every figure the lesson modules render."""
    import attention.lesson.figure as figure
    from attention.lesson import heads, layers, learning_pictures, special_tokens, tokens
    seen, render = [], figure.figure_to_rgb

    def record(fig):
        a = render(fig)
        seen.append((figure.smallest_text_px(fig), a.shape[:2]))
        return a
    for m in (heads, layers, learning_pictures, special_tokens, tokens):
        monkeypatch.setattr(m, "figure_to_rgb", record)
    return seen


def test_lesson_figures_are_drawn_at_their_box_with_text_of_at_least_15_px(monkeypatch):
    """Steps 1, 3, 4, 5: each picture fits the box the lesson shows it in at 1280x720 (so it is not shrunk) and
    sets no text below FIG_TEXT_PX; in presenter mode it is larger, within its presenter box, text x 1.4."""
    import torch

    from attention.capture import capture
    from attention.diagnostics import head_stats
    from attention.lesson.figure import FIG_TEXT_PX
    from attention.lesson.heads import HEADS_BOX, HEADS_PRESENTER_BOX, distance_vs_depth_picture, heads_picture
    from attention.lesson.layers import LAYERS_BOX, LAYERS_PRESENTER_BOX, layer_maps, raw_vs_rollout_picture
    from attention.lesson.special_tokens import (SPECIAL_BOX, SPECIAL_PRESENTER_BOX, high_norm_tokens, norms_picture,
                                                 prefix_attention, special_tokens_picture, token_norms)
    from attention.lesson.tokens import (TOKENS_BOX, TOKENS_PRESENTER_BOX, model_input_image, position_picture,
                                         position_similarity, token_sequence, tokens_picture)
    from attention.models import demo_names, load_model
    if "demo-vit" not in demo_names():
        pytest.skip("assets/demo-vit.safetensors missing")
    lm = load_model("demo-vit")
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64)
    res = capture(lm.model, x)
    view = model_input_image(x)
    seq = token_sequence(lm.model, x)
    tn = token_norms(lm.model, x)
    pictures = [(TOKENS_BOX, TOKENS_PRESENTER_BOX, lambda s: tokens_picture(x, seq, scale=s)),
                (TOKENS_BOX, TOKENS_PRESENTER_BOX, lambda s: position_picture(position_similarity(lm.model), scale=s)),
                (HEADS_BOX, HEADS_PRESENTER_BOX, lambda s: heads_picture(res, 3, (2, 5), view, scale=s)),
                (HEADS_BOX, HEADS_PRESENTER_BOX,
                 lambda s: distance_vs_depth_picture(head_stats(res), res.maps[3].layout, 3, scale=s)),
                (LAYERS_BOX, LAYERS_PRESENTER_BOX, lambda s: raw_vs_rollout_picture(layer_maps(res), view, scale=s)),
                (SPECIAL_BOX, SPECIAL_PRESENTER_BOX, lambda s: special_tokens_picture(prefix_attention(res), scale=s)),
                (SPECIAL_BOX, SPECIAL_PRESENTER_BOX, lambda s: norms_picture(tn, high_norm_tokens(tn), scale=s))]
    seen = _drawn(monkeypatch)
    for box, presenter_box, draw in pictures:
        sizes = []
        for scale, (bw, bh) in ((1.0, box), (PRESENTER_SCALE, presenter_box)):
            pic = draw(scale)
            text, shape = seen[-1]
            assert shape == pic.shape[:2] and pic.std() > 5
            assert text == pytest.approx(FIG_TEXT_PX * scale, abs=0.05), (draw, scale, text)
            assert pic.shape[1] <= bw and pic.shape[0] <= bh, (draw, scale, pic.shape, (bw, bh))
            sizes.append(pic.shape[:2])
        assert sizes[1][0] > sizes[0][0] and sizes[1][1] > sizes[0][1]            # presenter: drawn larger


def test_special_tokens_numbers_are_multiples_of_uniform_attention():
    """The "→ CLS" table prints each weight over 1/num_tokens with two significant digits: 0.0123 next to a uniform
    1/65 = 0.0154 reads 0.80, comparable to the stated 1 = uniform (0.00-0.02 with two decimals was not)."""
    from attention.lesson.special_tokens import times_uniform
    u = 1 / 65
    for w, shown in ((0.0123, "0.80"), (0.0154, "1.0"), (0.0307, "2.0"), (0.4, "26"), (0.0005, "0.03")):
        assert times_uniform(w / u) == shown
        assert abs(float(shown) * u - w) <= 0.05 * w + 0.005 * u              # two significant digits
    assert times_uniform(float("nan")) == ""


def test_training_pictures_are_drawn_at_the_size_of_their_box_in_each_mode(monkeypatch):
    """Step 6's pictures: at scale 1 the size of the 1280x720 box (learning_pictures.BOX, text FIG_TEXT_PX),
    in presenter mode 1.4x that (text 21 px)."""
    from types import SimpleNamespace

    from attention.lesson.figure import FIG_TEXT_PX, PRESENTER_SCALE
    from attention.lesson.learning_pictures import BOX, curves_picture, probes_picture
    seen = _drawn(monkeypatch)
    history = SimpleNamespace(step=[1, 2, 3], loss=[1.6, 1.2, 0.9], acc=[0.2, 0.4, 0.5])
    snaps = [SimpleNamespace(step=k, pointing_game=0.2 * k, rollout=np.random.default_rng(k).random((5, 8, 8)),
                             hits=[True, False, True, True, False]) for k in (0, 2)]
    state = SimpleNamespace(history=history, total_steps=10, step=3, status="running", snapshots=snaps)

    class Probes:                        # the probe images of a run: five 64x64 pictures and their classes
        images = np.zeros((5, 64, 64, 3), np.uint8) + 90
        label_names = ["circle", "square", "triangle", "cross", "star"]

        def __len__(self):
            return 5
    probes = Probes()
    for scale in (1.0, PRESENTER_SCALE):
        for pic in (curves_picture(state, scale), probes_picture(probes, snaps, scale=scale)):
            assert seen[-1][0] == pytest.approx(FIG_TEXT_PX * scale, abs=0.05)
            assert pic.shape[1] == round(BOX[0] * scale) and pic.shape[0] <= round(BOX[1] * scale)


def test_cell_values_fit_their_cells_with_the_most_decimals_that_fit():
    """Neighbouring values never run into each other ("−0.20−0.64"): each cell's text is at most the cell
    width less a margin, in the most precise format that fits every cell."""
    from attention.lesson.query_pictures import _cell_texts
    c = Canvas(100, 100)
    grid = np.array([[-0.20, -0.64, 3.10], [0.58, -1.30, 2.72]])
    wide = _cell_texts(c, grid, False, False, False, room=200)
    assert wide[0][:2] == ["−0.20", "−0.64"]                          # room enough: two decimals
    room = max(c.text_width(t, 15) for row in wide for t in row) - 1   # one pixel short of the widest
    narrow = _cell_texts(c, grid, False, False, False, room=room)
    assert narrow[0][:2] == ["−0.2", "−0.6"] and narrow[1][1] == "−1.3"
    assert max(c.text_width(t, 15) for row in narrow for t in row) <= room
    for row, values in zip(narrow, grid):                            # and the printed numbers are the values
        assert all(abs(float(t.replace("−", "-")) - v) <= 0.05 + 1e-9 for t, v in zip(row, values))
