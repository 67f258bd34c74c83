"""open_clip zero-shot models: a tiny random-init CLIP (registered as a config) and its bundled tokenizer.

The reference is written out independently: per class, each prompt template's text embedding
normalised, averaged, normalised; logits = exp(logit_scale) · cos(image embedding, class embedding).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

open_clip = pytest.importorskip("open_clip")

from attention import capture  # noqa: E402
from attention.cli import main as cli_main  # noqa: E402
from attention.errors import LabelsError, ModelNotFoundError, ModelUnavailableError  # noqa: E402
from attention.models import load_model  # noqa: E402

ARCH = "tiny-test-clip"
CONFIG = {"embed_dim": 32,
          "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
          "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


@pytest.fixture(scope="module", autouse=True)
def tiny_config(tmp_path_factory):
    d = tmp_path_factory.mktemp("open_clip_cfg")
    (d / f"{ARCH}.json").write_text(json.dumps(CONFIG))
    open_clip.add_model_config(str(d))      # open_clip's public way to add an architecture
    return d


def _photo(seed=0, h=48, w=60) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _reference_logits(clip, x, classes):
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
    tok = open_clip.get_tokenizer(ARCH)
    with torch.no_grad():
        rows = []
        for c in classes:
            t = clip.encode_text(tok([tpl(c) for tpl in OPENAI_IMAGENET_TEMPLATES]))
            t = t / t.norm(dim=-1, keepdim=True)
            m = t.mean(0)
            rows.append(m / m.norm())
        text = torch.stack(rows)
        img = clip.encode_image(x)
        img = img / img.norm(dim=-1, keepdim=True)
        return clip.logit_scale.exp() * img @ text.T


@pytest.fixture(scope="module")
def saved_clip(tmp_path_factory):
    torch.manual_seed(0)
    clip = open_clip.create_model(ARCH, pretrained=None).eval()
    path = tmp_path_factory.mktemp("ck") / "clip.safetensors"
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(path))
    return clip, str(path)


def test_zero_shot_logits_are_scaled_similarities_with_prompt_ensembling(saved_clip):
    clip, path = saved_clip
    lm = load_model(f"open_clip:{ARCH}", checkpoint=path)
    assert lm.is_zero_shot and not lm.has_classifier and "type the classes" in lm.no_classifier_reason
    zs = lm.with_classes("cat, dog,  teapot ,Cat")
    assert zs.class_names == ["cat", "dog", "teapot"] and zs.has_classifier
    assert lm.class_names == []                      # the original is unchanged
    prepared = zs.prepare(_photo())
    # open_clip's own eval transform gives the same pixels
    _, _, preprocess = open_clip.create_model_and_transforms(ARCH, pretrained=None)
    assert torch.allclose(prepared.tensor, preprocess(_photo()).unsqueeze(0), atol=1e-6)
    res = zs.capture(prepared)
    want = _reference_logits(clip, prepared.tensor, ["cat", "dog", "teapot"])
    assert torch.allclose(res.logits, want, atol=1e-4)
    top = zs.top_k(res.logits, 3)[0]
    probs = want.softmax(-1)[0]
    assert [p["label"] for p in top] == [["cat", "dog", "teapot"][int(i)] for i in probs.argsort(descending=True)]
    assert abs(top[0]["probability"] - float(probs.max())) < 1e-5
    assert len(res.maps) == 2 and res.maps[0].weights.shape == (1, 2, 17, 17)


def test_class_specific_gradient_explains_the_chosen_similarity(saved_clip):
    """d logit_c / d input differs per class: the maps of class-specific methods follow the chosen class."""
    _, path = saved_clip
    zs = load_model(f"open_clip:{ARCH}", checkpoint=path, classes=["cat", "dog"])
    x = zs.prepare(_photo(1)).tensor.requires_grad_(True)
    logits = zs.model(x)
    g0, = torch.autograd.grad(logits[0, 0], x, retain_graph=True)
    g1, = torch.autograd.grad(logits[0, 1], x)
    assert g0.abs().sum() > 0 and not torch.allclose(g0, g1)
    res = capture(zs.model, x.detach(), keep_graph=True)
    gm, = torch.autograd.grad(res.logits[0, 1], res.maps[-1].weights)
    assert gm.abs().sum() > 0          # the similarity depends on the captured attention


def test_classes_are_validated(saved_clip):
    _, path = saved_clip
    lm = load_model(f"open_clip:{ARCH}", checkpoint=path)
    for bad in ("", "cat", " , ,", "cat, CAT"):
        with pytest.raises(LabelsError, match="at least two classes"):
            lm.with_classes(bad)
    with pytest.raises(ModelNotFoundError, match="unknown open_clip architecture"):
        load_model("open_clip:Not-A-Model/openai")
    with pytest.raises(ModelNotFoundError, match="no pretrained weights 'nope'"):
        load_model("open_clip:ViT-B-32/nope")


def test_uncached_pretrained_tag_fails_fast_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="open_clip:ViT-B-32/openai"):
        load_model("open_clip:ViT-B-32/openai")


def test_cli_export_with_classes(saved_clip, tmp_path):
    clip, path = saved_clip
    img = tmp_path / "photo.png"
    _photo(2).save(img)
    out = tmp_path / "out"
    rc = cli_main(["export", "--model", f"open_clip:{ARCH}", "--checkpoint", path, "--classes", "cat, dog, teapot",
                   "--out", str(out), "--quiet", str(img)])
    assert rc == 0
    d = np.load(out / "photo.npz")
    want = _reference_logits(clip, torch.from_numpy(d["input"]), ["cat", "dog", "teapot"])
    np.testing.assert_allclose(d["logits"], want.numpy(), atol=1e-4)
    meta = json.loads((out / "photo.json").read_text())
    probs = F.softmax(want, -1)[0]
    assert meta["predictions"][0]["label"] == ["cat", "dog", "teapot"][int(probs.argmax())]
    assert abs(meta["predictions"][0]["probability"] - float(probs.max())) < 1e-5
    assert meta["no_predictions_reason"] is None
