"""Demo models build, train reproducibly, and save / load in the documented format."""
import json

import numpy as np
import pytest
import torch

from attention.demo.models import DEMO_ARCHS, build_model, default_config
from attention.demo.quality import demo_maps, rollout
from attention.demo.train import batch_tensors, load_demo, metadata, save_model, train


@pytest.mark.parametrize("arch", DEMO_ARCHS)
def test_build_and_logits(arch):
    torch.manual_seed(0)
    model = build_model(arch, default_config(arch), num_classes=5).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (3, 5)
    assert torch.isfinite(y).all()
    n_bytes = sum(p.numel() for p in model.state_dict().values()) * 4
    assert n_bytes < 5e6, n_bytes


def test_timm_vit_is_plain_and_torch_vit_tokens():
    from timm.models.vision_transformer import VisionTransformer
    vit = build_model("demo-vit", None, 5)
    assert type(vit) is VisionTransformer
    assert vit.patch_embed.grid_size == (8, 8) and vit.num_prefix_tokens == 1
    tv = build_model("demo-torch-vit", None, 5)
    t = tv.attention_tokens((64, 64))
    assert t.prefix_names == ("cls",) and t.grid == (8, 8) and tuple(t.stride) == (8, 8)
    assert isinstance(tv.encoder, torch.nn.TransformerEncoder)
    assert tv.pos_embed.shape == (1, 65, default_config("demo-torch-vit")["dim"])


def test_training_is_reproducible():
    kw = dict(steps=3, seed=11, batch_size=8, num_threads=1)
    m1, h1 = train("demo-cnn-attnpool", **kw)
    m2, h2 = train("demo-cnn-attnpool", **kw)
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys()
    for k in s1:
        assert torch.equal(s1[k], s2[k]), k
    assert h1["loss"] == h2["loss"]
    # and training changed the weights, differently for another seed
    m3, _ = train("demo-cnn-attnpool", **{**kw, "seed": 12})
    assert not torch.equal(s1["fc.weight"], m3.state_dict()["fc.weight"])


@pytest.mark.parametrize("arch", ["demo-vit", "demo-torch-vit", "demo-cnn-selfattn"])
def test_training_reproducible_other_archs(arch):
    kw = dict(steps=2, seed=3, batch_size=4, num_threads=1)
    s1 = train(arch, **kw)[0].state_dict()
    s2 = train(arch, **kw)[0].state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_callback_and_stop():
    calls = []
    model, h = train("demo-cnn-selfattn", steps=10, seed=0, batch_size=4, num_threads=1, callback_every=2,
                     progress_callback=lambda s, l, a: calls.append((s, l, a)),
                     should_stop=lambda: len(calls) >= 2)
    assert [c[0] for c in calls] == [2, 4]
    assert h["stopped"] and h["steps_done"] == 4
    assert all(np.isfinite(c[1]) and 0 <= c[2] <= 1 for c in calls)
    assert not model.training


def test_batches_are_a_function_of_seed_and_step():
    x1, y1 = batch_tensors(0, 5, 6)
    x2, y2 = batch_tensors(0, 5, 6)
    x3, _ = batch_tensors(0, 6, 6)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and not torch.equal(x1, x3)
    assert x1.shape == (6, 3, 64, 64) and -1.0 <= float(x1.min()) and float(x1.max()) <= 1.0


def test_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = build_model("demo-torch-vit", None, 5).eval()
    meta = metadata("demo-torch-vit", "demo-torch-vit", default_config("demo-torch-vit"),
                    {"steps": 0, "batch_size": 1, "seed": 0, "seconds": 0.0, "val_accuracy": 0.2})
    st, js = save_model(model, meta, str(tmp_path))
    with open(js) as f:
        d = json.load(f)
    assert set(d) == {"name", "arch", "config", "class_names", "preprocess", "training"}
    assert d["preprocess"]["input_size"] == [3, 64, 64] and d["preprocess"]["crop_pct"] == 1.0
    loaded, _ = load_demo(js)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize("arch", DEMO_ARCHS)
def test_demo_maps_shapes(arch):
    torch.manual_seed(0)
    model = build_model(arch, None, 5).eval()
    x = torch.randn(2, 3, 64, 64)
    logits, maps = demo_maps(model, arch, x)
    assert logits.shape == (2, 5) and maps.shape == (2, 8, 8)
    with torch.no_grad():
        assert torch.allclose(logits, model(x), atol=1e-5)
    assert torch.all(maps >= 0)
    if arch in ("demo-cnn-selfattn", "demo-cnn-attnpool"):
        # received attention (column means) and pooling weights are distributions over the 64 cells
        assert torch.allclose(maps.sum((1, 2)), torch.ones(2), atol=1e-5)


def test_rollout_formula():
    # two layers of single-head attention over 3 tokens
    a1 = torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5]])
    a2 = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    r = rollout([a1[None, None], a2[None, None]])[0]
    n1 = (a1 + torch.eye(3)) / 2
    n2 = (a2 + torch.eye(3)) / 2
    assert torch.allclose(r, n2 @ n1)
    assert torch.allclose(r.sum(-1), torch.ones(3))
