"""`attention.methods.menu`: which methods, heads and queries a real capture offers (random-init
timm ViTs, with and without a classifier, and the bundled demo CNN with attention pooling)."""
from __future__ import annotations

import pytest
import timm
import torch

from attention.capture import capture
from attention.demo.models import build_model
from attention.errors import MethodNotDefinedError
from attention.methods import get_method, method_names, methods, resolve_layer, spatial_layers
from attention.methods import menu

pytestmark = pytest.mark.usefixtures("single_intra_op_thread")


def _capture(model, size):
    torch.manual_seed(0)
    with torch.no_grad():
        return capture(model.eval(), torch.randn(1, 3, size, size))


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return _capture(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, img_size=48, depth=3), 48)


@pytest.fixture(scope="module")
def attnpool_cnn():
    torch.manual_seed(0)
    return _capture(build_model("demo-cnn-attnpool"), 64)


def test_cls_vit_offers_every_method_in_registry_order(vit):
    names, missing = menu.offered_methods(vit, has_classifier=True)
    assert "rollout" in names and "raw" in names
    assert names == [n for n in method_names() if n in names]          # registry order kept
    assert sorted(names + [n for n, _ in missing]) == sorted(method_names())
    for name, why in missing:                                          # each reason is the method's own
        assert why == get_method(name).defined_for(vit)


def test_backbone_refuses_class_specific_methods_with_no_classifier(vit):
    names, missing = menu.offered_methods(vit, has_classifier=False)
    refused = dict(missing)
    class_specific = [m.name for m in methods() if m.class_specific and m.defined_for(vit) is None]
    assert class_specific, "some class-specific method is defined for a CLS ViT"
    for name in class_specific:
        assert name not in names and refused[name] == menu.NO_CLASSIFIER
    assert "rollout" in names and "raw" in names


def test_fallback_rules(vit, attnpool_cnn):
    assert menu.fallback_method(vit, "rollout") == "rollout"
    cs = next(m.name for m in methods() if m.class_specific and m.defined_for(vit) is None)
    assert menu.fallback_method(vit, cs, has_classifier=True) == cs
    assert menu.fallback_method(vit, cs, has_classifier=False) == "raw"
    names, missing = menu.offered_methods(attnpool_cnn, has_classifier=True)
    assert names, "the attention-pooling CNN offers something"
    for wanted, _ in missing:                                            # not offered -> raw, else the first
        assert menu.fallback_method(attnpool_cnn, wanted) == ("raw" if "raw" in names else names[0])


def test_head_menus(vit):
    layer = menu.layer_at(vit, -1)
    assert layer.num_heads == 3
    assert menu.head_choices(layer, "rollout") == ["mean"]
    assert menu.head_choices(layer, "raw") == ["mean", "max", "min", "0", "1", "2"]
    assert menu.fuses_heads("raw") == ""
    assert menu.fuses_heads("rollout") == "Attention rollout combines every head itself: there is no head to choose"
    assert menu.parse_head("head 2") == 2 and menu.parse_head("MAX") == "max" and menu.parse_head(1) == 1
    assert menu.head_label("1") == "head 1" and menu.head_label("mean") == "mean over heads"
    with pytest.raises(MethodNotDefinedError, match="unknown head 'x'"):
        menu.parse_head("x")


def test_layers(vit):
    n = len(spatial_layers(vit))
    assert n == 3
    assert menu.layer_position(vit, -1) == 2 and menu.layer_position(vit, 99) == 2 and menu.layer_position(vit, 0) == 0
    assert menu.layer_at(vit, 1) is resolve_layer(vit, 1)[2]
    assert menu.layer_position(vit, menu.layer_at(vit, 1).name) == 1


def test_queries(vit, attnpool_cnn):
    assert menu.query_choices(vit) == ["auto", "cls", "patch_mean", "patch"]
    assert menu.query_label("auto", vit) == "CLS (default)"
    assert menu.query_label("auto") == "default"
    assert menu.query_label("reg2") == "register 2" and menu.query_label("cls+dist") == "CLS+DIST (mean)"
    assert menu.query_choices(attnpool_cnn)[0] == "auto"


def test_class_and_click_methods(vit):
    cs = menu.class_method(vit, "raw")
    assert get_method(cs).class_specific
    assert menu.class_method(vit, cs) == cs
    assert menu.class_method(vit, "raw", has_classifier=False) == "raw"
    assert menu.click_method(vit, "rollout") == "rollout"
    assert menu.click_method(vit, "gradcam") == "raw"
    assert menu.click_method(vit, "no-such-method") == "raw"
