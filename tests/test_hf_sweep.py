"""Every vision model type of the installed transformers, built tiny, against an independent reference.

The types are enumerated from transformers' auto mappings (`tests.hf_sweep.vision_types`), so a type
that a newer transformers adds is swept here without anyone listing it. Per type (`sweep_type`): a
random-init tiny model runs once plainly under the aten-level recorder (`attention_reference`) and
once through `capture`; every softmax must equal its reference record, every map must have a layout
(or be non-spatial by nature), and per distinct geometry a *probe* checks the layout independently:
the pixels of one grid cell are perturbed and the token of the attention module's own input that
changes most must be the token the layout (or the window geometry) puts at that cell; then the raw
view of that cell equals the reference record written out by the layout.

A type that is not exact is either without softmax attention (a CNN: shown by its source or a
meta-device forward), not swept (`NOT_SWEPT`, with the reason), or listed in `KNOWN_WRONG` with what
is wrong; a listed type that becomes exact fails the test, so the list only shrinks.
``python -m tests.hf_sweep`` prints the table.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from tests.hf_sweep import quiet_two_threads, sweep_type, vision_types  # noqa: E402

#: types whose capture is exact but whose geometry is not yet right, each with what is wrong
KNOWN_WRONG: dict[str, str] = {
}


#: types whose folders the loader refuses, each with the reason its message must give
LOADER_REFUSES: dict[str, str] = {
    "sam": "longest edge", "sam_hq": "longest edge",   # resize the longest edge, then pad: no one fixed crop
    "swin2sr": "input size is not fixed",              # pads each photo to whole windows
    "timm_backbone": "reading the folder's path as that name",   # transformers: the path as a timm model name
}


_quiet_two_threads = pytest.fixture(autouse=True, scope="module")(quiet_two_threads)


def test_the_sweep_enumerates_the_installed_types():
    types = vision_types()
    # the families the project documents are among them, each with the class the sweep builds
    for t in ("vit", "deit", "beit", "dinov2", "swin", "clip", "siglip", "sam", "yolos", "vitdet", "hiera"):
        assert t in types, t
    assert len(types) >= 60


@pytest.mark.parametrize("model_type", list(vision_types()))
def test_hf_type(model_type):
    row = sweep_type(model_type)
    if model_type in LOADER_REFUSES:
        assert row.loader.startswith("refused:") and LOADER_REFUSES[model_type] in row.loader, row.loader
    elif row.status == "exact":
        assert row.loader == "exact", f"{model_type} through load_model(folder): {row.loader}"
    if row.status == "refused":
        return
    if row.status in ("no attention", "not swept"):
        assert row.detail, f"{model_type}: {row.status} without a reason"
        return
    if model_type in KNOWN_WRONG:
        assert row.status != "exact", f"{model_type} is exact now: remove it from KNOWN_WRONG"
        pytest.xfail(f"{KNOWN_WRONG[model_type]} [{row.status}: {row.detail}]")
    assert row.status == "exact", f"{model_type} ({row.cls}): {row.status}: {row.detail}"
    assert row.ops == row.ref_ops > 0 and row.probes >= 1


def test_a_whole_sam2_model_through_the_loader(tmp_path):
    """What a SAM 2 checkpoint is (``Sam2Model``: image encoder + prompt encoder + mask decoder), saved with its
    processor and loaded: every softmax of the forward equals the reference, the image encoder's maps are placed
    as the bare encoder's (windows, global, pooled queries: probes and raw views by the independent partition),
    the mask decoder's token -> image maps are pooling maps over the image embedding's grid (probed), its other
    maps token matrices."""
    from transformers import Sam2Config, Sam2Model
    from attention.models import load_model
    from tests.hf_sweep import OVERRIDES, Row, _photo, check_model, processor_for
    vision = {k: v for k, v in OVERRIDES["sam2"].items() if k != "staged"}
    cfg = Sam2Config(vision_config=dict(vision, model_type="sam2_vision_model"),
                     prompt_encoder_config=dict(hidden_size=16, image_size=96, patch_size=16),
                     mask_decoder_config=dict(hidden_size=16, mlp_dim=32, num_attention_heads=2,
                                              iou_head_hidden_dim=16))
    torch.manual_seed(0)
    Sam2Model(cfg).eval().save_pretrained(tmp_path)
    proc = processor_for("sam2", (96, 96))
    proc.save_pretrained(tmp_path)
    lm = load_model(str(tmp_path))
    x = lm.prepare(_photo()).tensor
    assert torch.equal(x, proc(images=_photo(), return_tensors="pt")["pixel_values"].float())
    row = Row("sam2 (Sam2Model)")
    problems, res = check_model(row, lm.model, x)
    assert not problems, problems
    assert row.ops == row.ref_ops == 14 + 7 and row.max_err <= 1e-5
    assert row.probes == 8   # 3 window geometries, the global grid, 3 pooling blocks, the token -> image grid
    kinds = {}
    for m in res.maps:
        part = "encoder" if ".backbone." in m.name else "decoder"
        kinds.setdefault(part, []).append(m.kind)
    assert kinds["encoder"] == ["window", "reduced", "window", "reduced", "self", "window", "reduced"]
    assert kinds["decoder"].count("pooling") == 3 and set(kinds["decoder"]) == {"pooling", "tokens"}
    assert all(m.layout.grid == (6, 6) for m in res.maps if m.kind == "pooling")


def test_a_whole_edgetam_model_through_the_loader(tmp_path):
    """EdgeTAM (SAM 2's prompt encoder and mask decoder on a RepViT image encoder, which has no attention): its
    attention is the mask decoder's. Every softmax equals the reference; the token -> image maps are pooling maps
    over the image embedding's grid (``backbone_feature_sizes[-1]``), the rest token matrices. (No pixel probe:
    the random-init RepViT's last feature map changes by ~1e-9 for a perturbed cell, below float noise.)"""
    from transformers import EdgeTamConfig, EdgeTamModel, EdgeTamVisionConfig
    from attention import capture
    from attention.layout import POOLING, TOKENS
    from attention.models import load_model
    from tests.attention_reference import reference_attention
    from tests.hf_sweep import _photo, processor_for, tiny_config
    cfg = EdgeTamConfig(vision_config=tiny_config("edgetam", EdgeTamVisionConfig),
                        prompt_encoder_config=dict(hidden_size=16, image_size=64, patch_size=16),
                        mask_decoder_config=dict(hidden_size=16, mlp_dim=32, num_attention_heads=2,
                                                 iou_head_hidden_dim=16))
    torch.manual_seed(0)
    EdgeTamModel(cfg).eval().save_pretrained(tmp_path)
    processor_for("edgetam", (64, 64)).save_pretrained(tmp_path)
    lm = load_model(str(tmp_path))
    model, x = lm.model, lm.prepare(_photo()).tensor
    res = capture(model, x)
    _, ref = reference_attention(model, x)
    assert len(res.records) == len(ref.records) == 7
    for got, want in zip(res.records, ref.records):
        assert float((got.weights.double().reshape(-1, got.weights.shape[-1]) - want).abs().max()) <= 1e-5
    assert [m.kind for m in res.maps] == [TOKENS, POOLING, TOKENS] * 2 + [POOLING]
    assert all(m.layout.grid == (4, 4) and m.layout_source == "known" for m in res.maps if m.kind == POOLING)


def test_a_whole_sam3_tracker_model_through_the_loader(tmp_path):
    """SAM 3's tracker as saved (``Sam3TrackerModel``: SAM 3's ViT + SAM 2's prompt encoder and mask decoder): every
    softmax equals the reference; the ViT's maps as in the sweep; the decoder's token -> image maps pool over the
    image embedding's 6 x 6 grid, which is the ViT's patch grid: perturbing a patch's pixels changes the keys the
    decoder reads around that cell (the FPN's 3 x 3 convolution spreads it over the neighbours: the change's
    centre of mass is within half a cell of it), the rest token matrices."""
    from transformers import Sam3TrackerConfig, Sam3TrackerModel
    from transformers.models.sam3.configuration_sam3 import Sam3VisionConfig
    from attention import capture
    from attention.layout import POOLING, SELF, TOKENS, WINDOW
    from attention.models import load_model
    from tests.attention_reference import reference_attention
    from tests.hf_sweep import _photo, processor_for, tiny_config
    cfg = Sam3TrackerConfig(vision_config=tiny_config("sam3_tracker", Sam3VisionConfig),
                            prompt_encoder_config=dict(hidden_size=16, image_size=48, patch_size=8),
                            mask_decoder_config=dict(hidden_size=16, mlp_dim=32, num_attention_heads=2,
                                                     iou_head_hidden_dim=16))
    torch.manual_seed(0)
    Sam3TrackerModel(cfg).eval().save_pretrained(tmp_path)
    processor_for("sam3_tracker", (48, 48)).save_pretrained(tmp_path)
    lm = load_model(str(tmp_path))
    model, x = lm.model, lm.prepare(_photo()).tensor
    res = capture(model, x)
    _, ref = reference_attention(model, x)
    assert len(res.records) == len(ref.records) == 9
    for got, want in zip(res.records, ref.records):
        assert float((got.weights.double().reshape(-1, got.weights.shape[-1]) - want).abs().max()) <= 1e-5
    assert [m.kind for m in res.maps] == [WINDOW, SELF] + [TOKENS, POOLING, TOKENS] * 2 + [POOLING]
    pooling = [m for m in res.maps if m.kind == POOLING]
    assert all(m.layout.grid == (6, 6) and m.layout_source == "known" for m in pooling)
    module = dict(model.named_modules())[pooling[0].name]
    seen = []
    hook = module.register_forward_pre_hook(lambda mod, a, kw: seen.append(kw["value"]), with_kwargs=True)
    try:
        for cell in [(3, 3), (1, 4), (4, 1)]:
            seen.clear()
            x2 = x.clone()
            x2[..., cell[0] * 8:(cell[0] + 1) * 8, cell[1] * 8:(cell[1] + 1) * 8] += 3.0
            with torch.no_grad():
                model(x)
                model(x2)
            d = (seen[1] - seen[0]).abs().sum(-1).reshape(-1).double()    # change per key token
            cells = [(r, c) for r in range(6) for c in range(6)]
            w = torch.stack([d[pooling[0].layout.patch_index(r, c)] for r, c in cells])   # at the cell it says
            rows, cols = (torch.tensor([rc[k] for rc in cells], dtype=torch.float64) for k in (0, 1))
            centre = (float((w * rows).sum() / w.sum()), float((w * cols).sum() / w.sum()))
            assert abs(centre[0] - cell[0]) < 0.5 and abs(centre[1] - cell[1]) < 0.5, (cell, centre)
    finally:
        hook.remove()


def test_a_sam2_pooling_layer_too_large_to_write_out_says_so(monkeypatch):
    """At SAM 2's real size the first pooling blocks' full matrices would be billions of entries: such a layer stays
    a per-window record and its refusal says why, with the count (here forced by a small cap on the tiny model)."""
    from attention import capture
    from attention.families import hf_sam2
    from tests.hf_sweep import build_tiny, input_size
    model, cfg = build_tiny("sam2")
    x = torch.randn(1, 3, *input_size(cfg))
    placed = capture(model, x)
    pooled = [m for m in placed.maps if m.kind == "reduced"]
    assert pooled, [m.kind for m in placed.maps]
    monkeypatch.setattr(hf_sam2, "MAX_DENSE", 10)
    res = capture(model, x)
    for m in pooled:
        left = next(r for r in res.maps if r.name == m.name)
        B, heads, nq, nk = m.weights.shape            # the full matrix it would have been
        reason = left.not_spatial_reason()
        assert left.kind == "window" and left.window is None
        assert "pooled inside each window" in reason and f"{B * heads * nq * nk:,} entries" in reason, reason
        assert "no family descriptor" not in reason
