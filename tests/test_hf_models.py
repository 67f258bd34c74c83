"""Hugging Face transformers models: save_pretrained folders and hf:ORG/NAME through the real loading path.

Every model is a tiny random-init config saved into a temp folder by the test (no hub here); the
references are the transformers models themselves (their logits, and their own eager
``output_attentions=True`` weights for the captured attention).
"""
from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest
import torch
from PIL import Image

transformers = pytest.importorskip("transformers")

from attention import capture  # noqa: E402
from attention.cli import main as cli_main  # noqa: E402
from attention.errors import CheckpointError, ModelUnavailableError  # noqa: E402
from attention.models import load_model  # noqa: E402

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
             patch_size=8)
LABELS = {0: "cat", 1: "dog", 2: "teapot"}


def _labels():
    return dict(num_labels=3, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})


def _vit():
    return transformers.ViTForImageClassification(transformers.ViTConfig(**SMALL, **_labels())), \
        transformers.ViTImageProcessor(size={"height": 32, "width": 32})


def _deit_teacher():
    return (transformers.DeiTForImageClassificationWithTeacher(transformers.DeiTConfig(**SMALL, **_labels())),
            transformers.DeiTImageProcessor(size={"height": 40, "width": 40}, crop_size={"height": 32, "width": 32}))


def _beit():
    cfg = transformers.BeitConfig(**SMALL, **_labels(), use_relative_position_bias=True, use_mean_pooling=True)
    return transformers.BeitForImageClassification(cfg), transformers.BeitImageProcessor(
        size={"height": 32, "width": 32}, do_center_crop=False, do_reduce_labels=False)


def _bit_proc():
    return transformers.BitImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32})


def _dinov2():
    return transformers.Dinov2ForImageClassification(transformers.Dinov2Config(**SMALL, **_labels())), _bit_proc()


def _dinov2_registers():
    cfg = transformers.Dinov2WithRegistersConfig(**SMALL, **_labels(), num_register_tokens=4)
    return transformers.Dinov2WithRegistersForImageClassification(cfg), _bit_proc()


def _dinov2_backbone():
    return transformers.Dinov2Model(transformers.Dinov2Config(**SMALL)), _bit_proc()


def _swin():
    cfg = transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2],
                                  window_size=4, **_labels())
    return transformers.SwinForImageClassification(cfg), transformers.ViTImageProcessor(size={"height": 32, "width": 32})


def _clip_vision():
    cfg = transformers.CLIPVisionConfig(**SMALL)
    return transformers.CLIPVisionModel(cfg), transformers.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


def _siglip_vision():
    cfg = transformers.SiglipVisionConfig(**SMALL)
    return transformers.SiglipVisionModel(cfg), transformers.SiglipImageProcessor(size={"height": 32, "width": 32})


FAMILIES = {"vit": _vit, "deit_teacher": _deit_teacher, "beit": _beit, "dinov2": _dinov2,
            "dinov2_registers": _dinov2_registers, "dinov2_backbone": _dinov2_backbone, "swin": _swin,
            "clip_vision": _clip_vision, "siglip_vision": _siglip_vision}
HEADLESS = {"dinov2_backbone", "clip_vision", "siglip_vision"}


def _save(family: str, folder) -> tuple[torch.nn.Module, str]:
    torch.manual_seed(0)
    model, proc = FAMILIES[family]()
    model.eval()
    model.save_pretrained(str(folder))
    proc.save_pretrained(str(folder))
    model.set_attn_implementation("eager")
    return model, str(folder)


def _photo(h=50, w=70, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _out(model, x, **kw):
    with torch.no_grad():
        return model(pixel_values=x, **kw)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_hf_folder_loads_with_identical_outputs(tmp_path, family):
    ref, folder = _save(family, tmp_path / family)
    for name in (folder, "hf:" + folder):
        lm = load_model(name)
        assert lm.source == "transformers" and lm.model.config._attn_implementation == "eager"
        prepared = lm.prepare(_photo())
        x = prepared.tensor
        # the pixels are the saved processor's own
        proc = transformers.AutoImageProcessor.from_pretrained(folder)
        assert torch.equal(x, proc(images=_photo(), return_tensors="pt")["pixel_values"].float())
        got, want = _out(lm.model, x), _out(ref, x)
        if family in HEADLESS:
            assert not lm.has_classifier and "bare" in lm.no_classifier_reason and lm.class_names == []
            assert torch.equal(got.last_hidden_state, want.last_hidden_state)
        else:
            assert lm.has_classifier and lm.class_names == ["cat", "dog", "teapot"]
            assert torch.equal(got.logits, want.logits)


def test_hf_geometry_follows_resize_and_floor_centre_crop(tmp_path):
    """BitImageProcessor: shortest edge 36 then a 32 × 32 centre crop with floor offsets (transformers')."""
    _, folder = _save("dinov2", tmp_path / "d")
    lm = load_model(folder)
    g = lm.prepare(_photo(50, 71)).geometry
    # by hand: 50 × 71 -> 36 × int(36 * 71 / 50) = 36 × 51; crop top (36-32)//2 = 2, left (51-32)//2 = 9
    sy, sx = 50 / 36, 71 / 51
    assert g.input_size == (32, 32)
    np.testing.assert_allclose(g.box, (2 * sy, 9 * sx, (2 + 32) * sy, (9 + 32) * sx), rtol=1e-9)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_hf_capture_equals_output_attentions(tmp_path, family):
    """The captured softmaxes equal transformers' own eager ``output_attentions`` weights."""
    ref, folder = _save(family, tmp_path / family)
    lm = load_model(folder)
    x = lm.prepare(_photo()).tensor
    res = capture(lm.model, x)
    want = _out(ref, x, output_attentions=True).attentions
    maps = res.maps
    if family == "siglip_vision":   # + the attention-pooling head's one query (not in output_attentions)
        assert len(maps) == 3 and "head" in maps[-1].name and maps[-1].weights.shape[-2] == 1
        maps = maps[:2]
    assert len(maps) == len(want) == 2
    for m, w in zip(maps, want):
        assert m.weights.shape == w.shape
        assert torch.allclose(m.weights.float(), w, atol=1e-6)
    out = _out(ref, x)
    if hasattr(out, "logits"):
        expect = out.logits
    else:   # a backbone: the capture's output is the pooled embedding where the model has one
        expect = out.pooler_output if getattr(out, "pooler_output", None) is not None else out.last_hidden_state
    assert torch.allclose(res.logits, expect, atol=1e-6)


def test_hf_cli_export(tmp_path):
    ref, folder = _save("deit_teacher", tmp_path / "deit")
    img = tmp_path / "photo.png"
    _photo(60, 80).save(img)
    out = tmp_path / "out"
    rc = cli_main(["export", "--model", "hf:" + folder, "--out", str(out), "--quiet", str(img)])
    assert rc == 0
    d = np.load(out / "photo.npz")
    logits = _out(ref, torch.from_numpy(d["input"])).logits
    np.testing.assert_allclose(d["logits"], logits.numpy(), atol=1e-6)
    meta = json.loads((out / "photo.json").read_text())
    assert meta["predictions"][0]["label"] == LABELS[int(logits.argmax())]
    assert meta["preprocessing"]["image_processor"] == "DeiTImageProcessor"


def test_hf_partial_weights_are_refused_with_a_listing(tmp_path):
    from safetensors.torch import load_file, save_file
    _, folder = _save("vit", tmp_path / "vit")
    sd = load_file(os.path.join(folder, "model.safetensors"))
    key = next(k for k in sd if "encoder.layer.1.attention" in k)
    del sd[key]
    save_file(sd, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"do not fit ViTForImageClassification: 1 missing keys: \S*1\.attention"):
        load_model(folder)


def test_hf_folder_without_processor_uses_the_family_default_at_the_model_size(tmp_path):
    ref, folder = _save("vit", tmp_path / "vit")
    os.remove(os.path.join(folder, "preprocessor_config.json"))
    lm = load_model(folder)
    assert lm.preprocess.input_size == (32, 32) and "defaults" in lm.preprocess.config["from"]


def _fake_hub_snapshot(cache, repo: str, folder: str) -> None:
    d = os.path.join(cache, "models--" + repo.replace("/", "--"))
    snap = os.path.join(d, "snapshots", "0123abcd")
    os.makedirs(os.path.join(d, "refs"))
    with open(os.path.join(d, "refs", "main"), "w") as f:
        f.write("0123abcd")
    shutil.copytree(folder, snap)


def test_hf_hub_name_loads_from_the_cache_offline(tmp_path, monkeypatch):
    ref, folder = _save("vit", tmp_path / "vit")
    _fake_hub_snapshot(str(tmp_path / "cache"), "someorg/tiny-vit", folder)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lm = load_model("hf:someorg/tiny-vit")
    x = lm.prepare(_photo()).tensor
    assert torch.equal(_out(lm.model, x).logits, _out(ref, x).logits)
    assert lm.info["hf"] == "someorg/tiny-vit"


@pytest.mark.parametrize("offline", ["1", ""])
def test_hf_hub_name_not_cached_fails_fast_and_clearly(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")   # nothing listens: an unreachable hub
    t = time.monotonic()
    with pytest.raises(ModelUnavailableError) as e:
        load_model("hf:google/vit-base-patch16-224")
    assert time.monotonic() - t < 10
    msg = str(e.value)
    assert "google/vit-base-patch16-224" in msg and "save_pretrained" in msg and "demo-vit" in msg


@pytest.mark.parametrize("family", ["deit_teacher", "dinov2_backbone"])
def test_hf_models_in_the_app(tmp_path, family):
    """The app's path: a save_pretrained folder by path on this machine, analysed with predictions from id2label."""
    from viz_app.callbacks import Callbacks
    from viz_app.models import ModelManager
    ref, folder = _save(family, tmp_path / family)
    cb = Callbacks(ModelManager())
    name = cb.manager.register_path(folder)
    img = tmp_path / "photo.png"
    _photo(60, 80).save(img)
    a = cb.analyse("s1", str(img), name)
    x = a.prepared.tensor
    if family in HEADLESS:
        assert a.predictions == [] and "No predictions" in cb.manager.prediction_note(name)
    else:
        probs = _out(ref, x).logits.softmax(-1)[0]
        assert a.predictions[0]["label"] == LABELS[int(probs.argmax())]
        assert abs(a.predictions[0]["probability"] - float(probs.max())) < 1e-4
    assert len(a.result.maps) >= 2


def test_timm_model_in_hub_format_folder(tmp_path):
    """A timm model saved the way timm pushes to the hub: config.json {architecture, num_classes, label_names}
    + model.safetensors; the folder path loads it (headless or not)."""
    import timm
    from safetensors.torch import save_file
    torch.manual_seed(0)
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3).eval()
    d = tmp_path / "timm_folder"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"architecture": "vit_tiny_patch16_224", "num_classes": 3,
                                               "label_names": ["cat", "dog", "teapot"]}))
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(d / "model.safetensors"))
    lm = load_model(str(d))
    assert lm.source == "timm" and lm.class_names == ["cat", "dog", "teapot"]
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(lm.model(x), ref(x))


def test_timm_wrapper_folder_uses_the_timm_data_config_in_config_json(tmp_path):
    """A timm model saved through transformers (``timm_wrapper``): no preprocessor_config.json, the data
    config in config.json; the pixels are timm's eval transform of it (transformers' own processor)."""
    import timm
    torch.manual_seed(0)
    pc = dict(input_size=(3, 32, 32), interpolation="bicubic", crop_pct=0.875, crop_mode="center",
              mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    ref = transformers.TimmWrapperForImageClassification(
        transformers.TimmWrapperConfig(architecture="test_vit", pretrained_cfg=pc)).eval()
    ref.save_pretrained(str(tmp_path))
    lm = load_model(str(tmp_path))
    x = lm.prepare(_photo()).tensor
    want = transformers.AutoImageProcessor.from_pretrained(str(tmp_path))(_photo(), return_tensors="pt")["pixel_values"]
    assert x.shape == (1, 3, 32, 32) and torch.equal(x, want.float())
    # the same pixels by timm's own transform, written out: shortest edge 32 / 0.875 = 36, centre crop 32
    t = timm.data.create_transform(input_size=(3, 32, 32), interpolation="bicubic", crop_pct=0.875,
                                   mean=(0.5,) * 3, std=(0.5,) * 3)
    assert torch.allclose(x[0], t(_photo()), atol=1e-6)
    assert torch.equal(_out(lm.model, x).logits, _out(ref, x).logits)


def test_imagegpt_is_refused_with_its_reason(tmp_path):
    cfg = transformers.ImageGPTConfig(n_embd=32, n_layer=2, n_head=2, n_positions=64, vocab_size=17)
    transformers.ImageGPTForImageClassification(cfg).save_pretrained(str(tmp_path))
    transformers.ImageGPTImageProcessor(size={"height": 8, "width": 8}).save_pretrained(str(tmp_path))
    with pytest.raises(CheckpointError, match=r"reads colour-cluster ids.*no colour clusters"):   # loads with them
        load_model(str(tmp_path))


def test_cvt_convnext_processor_has_a_fixed_size(tmp_path):
    """ConvNeXt's processor (CvT's too): shortest edge to 32 / crop_pct, then a 32 x 32 centre crop."""
    cfg = transformers.CvtConfig(embed_dim=[16, 32], num_heads=[1, 2], depth=[1, 2], patch_sizes=[7, 3],
                                 patch_stride=[4, 2], patch_padding=[2, 1], mlp_ratio=[2.0, 2.0],
                                 attention_drop_rate=[0.0, 0.0], drop_rate=[0.0, 0.0], drop_path_rate=[0.0, 0.0],
                                 qkv_bias=[True, True], cls_token=[False, True], qkv_projection_method=["dw_bn"] * 2,
                                 kernel_qkv=[3, 3], padding_kv=[1, 1], stride_kv=[2, 2], padding_q=[1, 1],
                                 stride_q=[1, 1])
    transformers.CvtForImageClassification(cfg).save_pretrained(str(tmp_path))
    proc = transformers.ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.8)
    proc.save_pretrained(str(tmp_path))
    lm = load_model(str(tmp_path))
    prepared = lm.prepare(_photo(50, 71))
    assert torch.equal(prepared.tensor, proc(images=_photo(50, 71), return_tensors="pt")["pixel_values"].float())
    # by hand: 50 x 71 -> shortest edge int(32 / 0.8) = 40: 40 x int(40 * 71 / 50) = 40 x 56; crop (4, 12)
    s = 50 / 40
    np.testing.assert_allclose(prepared.geometry.box, (4 * s, 12 * (71 / 56), 36 * s, 44 * (71 / 56)), rtol=1e-9)


@pytest.mark.parametrize("kind", ["glpn"])   # SigLIP 2 (NaFlex) loads now: tests/test_hf_hiera_siglip2.py
def test_processors_without_one_fixed_size_are_refused_with_the_reason(tmp_path, kind):
    if kind == "glpn":
        cfg = transformers.GLPNConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32],
                                      patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 2],
                                      mlp_ratios=[2, 2], decoder_hidden_size=16)
        transformers.GLPNModel(cfg).save_pretrained(str(tmp_path))
        transformers.GLPNImageProcessor().save_pretrained(str(tmp_path))
        match = r"no fixed input size: it rounds each photo's own height and width down to a multiple of size_divisor=32"
    else:
        transformers.Siglip2VisionModel(transformers.Siglip2VisionConfig(**{k: v for k, v in SMALL.items() if k != "image_size"},
                                                                         num_patches=16)).save_pretrained(str(tmp_path))
        transformers.Siglip2ImageProcessor(max_num_patches=16, patch_size=8).save_pretrained(str(tmp_path))
        match = r"NaFlex processor \(SigLIP 2\).*max_num_patches=16.*spatial_shapes"
    with pytest.raises(CheckpointError, match=match):
        load_model(str(tmp_path))


def _tiny(model_type):
    from tests.hf_sweep import build_tiny, input_size
    model, cfg = build_tiny(model_type)
    return model, torch.randn(1, 3, *input_size(cfg), generator=torch.Generator().manual_seed(1))


def test_yolos_detection_tokens_sit_after_the_patches():
    """YOLOS: [CLS, patches, det0..det2]. The CLS map is A[cls, 1 : 1 + n] (not the last n tokens), and
    the detection tokens are queries by name."""
    from attention.methods.raw import raw_attention
    from attention.methods.rollout import rollout
    model, x = _tiny("yolos")
    res = capture(model, x)
    m = res.maps[0]
    gh, gw = m.layout.grid
    n = gh * gw
    assert m.layout.prefix_names == ("cls",) and m.layout.suffix_names == ("det0", "det1", "det2")
    assert m.weights.shape[-1] == 1 + n + 3
    want = m.weights[0, :, 0, 1:1 + n].float().mean(0).reshape(gh, gw)
    assert torch.equal(raw_attention(res, 0, "mean", "cls")[0], want)
    det = m.weights[0, :, 1 + n + 2, 1:1 + n].float().mean(0).reshape(gh, gw)
    assert torch.equal(raw_attention(res, 0, "mean", "det2")[0], det)
    # patch_mean reads the patch rows only
    pm = m.weights[0, :, 1:1 + n, 1:1 + n].float().mean(0).mean(0).reshape(gh, gw)
    assert torch.allclose(raw_attention(res, 0, "mean", "patch_mean")[0], pm, atol=1e-7)
    assert rollout(res).shape == (1, gh, gw)


def test_groupvit_group_tokens_after_the_patches_and_later_stages_are_token_matrices():
    from attention.layout import POOLING, SELF, TOKENS
    from attention.methods.raw import raw_attention
    model, x = _tiny("groupvit")
    res = capture(model, x)
    first = res.maps[0]
    gh, gw = first.layout.grid
    n = gh * gw
    assert first.kind == SELF and first.layout.prefix_names == () and first.layout.suffix_names == tuple(
        f"group{i}" for i in range(4))
    # the patch (1, 2)'s row over the patches: the first n keys, the groups come after them
    want = first.weights[0, :, 1 * gw + 2, :n].float().mean(0).reshape(gh, gw)
    assert torch.equal(raw_attention(res, 0, "mean", (1, 2))[0], want)
    assert res.maps[1].kind == POOLING and res.maps[1].weights.shape[-1] == n   # groups -> patches
    later = [m for m in res.maps[2:]]
    assert later and all(m.kind == TOKENS and not m.is_spatial for m in later)
    assert all("no image positions" in m.not_spatial_reason() for m in later)


def test_perceiver_cross_attention_is_the_spatial_map():
    from attention.layout import POOLING, TOKENS
    from attention.methods.received import received
    model, x = _tiny("perceiver")
    res = capture(model, x)
    cross = res.maps[0]
    assert cross.kind == POOLING and cross.layout.grid == tuple(x.shape[-2:])   # one key per pixel here
    assert cross.query_layout.prefix_names[0] == "latent0"
    # received: the mean over the latents of their attention to each pixel
    want = cross.weights[0].float().mean(1).mean(0).reshape(cross.layout.grid)
    assert torch.allclose(received(cross)[0], want, atol=1e-7)
    assert all(m.kind == TOKENS for m in res.maps[1:])


def test_vitdet_and_sam_windows_are_placed_at_their_windows():
    """Window layers fold the windows into the head axis in transformers' kernels; the capture unfolds
    them: (nW, heads, n, n), each window's rows placed on the padded token grid."""
    from attention.layout import WINDOW
    from attention.methods.received import received_heads
    for t in ("vitdet", "sam"):
        model, x = _tiny(t)
        res = capture(model, x)
        m = next(m for m in res.maps if m.kind == WINDOW)
        info = m.window
        assert info.grid == (10, 10) and info.padded == (12, 12) and info.window == (4, 4)
        assert m.weights.shape[:2] == (9, 2)
        # received attention written out: for token (r, c), the mean over its window's queries
        per = received_heads(m)[0]
        for r, c in ((0, 0), (5, 7), (9, 9)):
            w, p = info.locate(r, c)
            assert torch.allclose(per[:, r, c], m.weights[w, :, :, p].float().mean(-1), atol=1e-7)


def test_vit_mae_is_captured_unmasked_and_in_order(tmp_path):
    """ViTMAE (mask_ratio 0.75): a capture runs every patch, in place; the reference is the model's own
    eager attention with mask_ratio 0 and noise 0, 1, 2, … (argsort = identity). The model is left as found."""
    cfg = transformers.ViTMAEConfig(**SMALL, mask_ratio=0.75)
    torch.manual_seed(0)
    model = transformers.ViTMAEModel(cfg).eval()
    model.set_attn_implementation("eager")
    x = torch.randn(1, 3, 32, 32)
    res = capture(model, x)
    n = 16
    assert [tuple(m.weights.shape) for m in res.maps] == [(1, 2, 1 + n, 1 + n)] * 2
    assert res.maps[0].layout.grid == (4, 4) and res.maps[0].layout_source == "known"
    assert model.config.mask_ratio == 0.75 and "random_masking" not in model.embeddings.__dict__
    with torch.no_grad():
        masked = model(x)
    assert masked.last_hidden_state.shape[1] == 1 + n // 4          # outside a capture it still masks
    model.config.mask_ratio = 0.0
    with torch.no_grad():
        want = model(x, noise=torch.arange(n, dtype=torch.float32)[None], output_attentions=True).attentions
    for m, w in zip(res.maps, want):
        assert torch.allclose(m.weights, w, atol=1e-6)
    model.config.mask_ratio = 0.75
    model.save_pretrained(str(tmp_path))
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(tmp_path))
    lm = load_model(str(tmp_path))
    assert "unmasked for viewing" in lm.info["masking"] and "0.75" in lm.info["masking"]
