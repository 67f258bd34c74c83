"""Every registered method on every model family the tests build, through the one entry point
(`attention.methods.compute_map`) that the app, the CLI, the export and the evaluation call; and
the registry as the single list all of them enumerate."""
from __future__ import annotations

import re
import types

import numpy as np
import pytest
import timm
import torch
import torchvision

from attention.capture import capture
from attention.demo.evaluate import default_maps
from attention.demo.models import TorchViT
from attention.errors import MethodNotDefinedError
from attention.export import method_arrays
from attention.methods import (MapResult, Method, compute_map, get_method, grad_rollout, gradcam, method_names,
                               methods, raw_attention, register, resolve_layer, rollout, spatial_layers, unregister)
from attention.methods.received import received
from attention.models import load_model

pytestmark = pytest.mark.usefixtures("single_intra_op_thread")

EXPECTED = {"raw", "rollout", "grad_rollout", "transformer_attribution", "gradcam", "received", "attnlrp"}


def _timm(name, **kw):
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=5, **kw).eval()


def _torchvision_vit():
    torch.manual_seed(0)
    m = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                             hidden_dim=32, mlp_dim=64, num_classes=5).eval()
    torch.nn.init.normal_(m.heads.head.weight, std=0.5)    # torchvision starts the head at zero: no gradients
    return m


def _post_norm_torch_vit():
    torch.manual_seed(0)
    return TorchViT(img_size=32, patch_size=8, dim=32, depth=2, heads=2, mlp_dim=64, norm_first=False).eval()


# family -> (model builder, input size)
FAMILIES = {
    "timm-vit": (lambda: _timm("vit_tiny_patch16_224", img_size=48, depth=3), 48),
    "timm-deit-distilled": (lambda: _timm("deit_tiny_distilled_patch16_224", img_size=48, depth=2), 48),
    "timm-reg4": (lambda: _timm("vit_small_patch14_reg4_dinov2", img_size=42, depth=2, embed_dim=48, num_heads=2), 42),
    "timm-swin": (lambda: _timm("swin_tiny_patch4_window7_224", img_size=96, embed_dim=24, num_heads=(1, 2, 3, 4),
                                depths=(2, 2, 2, 2)), 96),
    "timm-cait": (lambda: _timm("cait_xxs24_224", img_size=48, depth=2, init_values=0.5), 48),
    "torchvision-vit": (_torchvision_vit, 32),
    "nn-transformer-encoder-vit": (_post_norm_torch_vit, 32),
    "demo-vit": (lambda: load_model("demo-vit").model, 64),
    "demo-torch-vit": (lambda: load_model("demo-torch-vit").model, 64),
    "demo-cnn-selfattn": (lambda: load_model("demo-cnn-selfattn").model, 64),
    "demo-cnn-attnpool": (lambda: load_model("demo-cnn-attnpool").model, 64),
}


def test_registry_lists_every_method_once_with_its_description():
    names = method_names()
    assert set(names) == EXPECTED and len(names) == len(set(names))
    assert [m.name for m in methods()] == names
    for m in methods():
        assert get_method(m.name) is m and m.label and m.summary and type(m).__doc__
        assert not (m.class_specific and not m.needs_model)   # a class needs the model's logits and gradients
    assert default_maps() == ["heatmap"] + names


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    build, size = FAMILIES[request.param]
    model = build()
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, size, size, generator=g)
    return request.param, model, x, capture(model, x)


def _expected(name, model, x, result):
    """The same map from the functional API (an independent call path: no registry, no context)."""
    if name == "rollout":
        return rollout(result)
    if name == "grad_rollout":
        return grad_rollout(model, x)
    if name == "gradcam":
        return gradcam(model, x)
    if name == "raw":
        _, i, m = resolve_layer(result, -1)
        return received(m) if m.kind == "window" else raw_attention(result, i, "mean", "auto")
    if name == "received":
        return received(resolve_layer(result, -1)[2])
    return None


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_method_on_every_family(family, name):
    fam, model, x, result = family
    method = get_method(name)
    why = method.defined_for(result)
    if why is not None:
        assert isinstance(why, str) and len(why) > 20
        with pytest.raises(MethodNotDefinedError, match=re.escape(method.label)):
            compute_map(name, result, model=model, x=x)
        return
    out = compute_map(name, result, model=model, x=x)
    assert isinstance(out, MapResult) and out.method == name
    maps = out.maps
    assert maps.dim() == 3 and maps.shape[0] == 2 and torch.isfinite(maps).all(), (fam, name, maps.shape)
    if out.layout is not None:
        assert tuple(maps.shape[-2:]) == tuple(out.layout.grid)
    if out.stride is not None:
        assert tuple(maps.shape[-2:]) == tuple(result.tokens.grid)
    want = _expected(name, model, x, result)
    if want is not None:
        torch.testing.assert_close(maps, want.float(), rtol=1e-5, atol=1e-7)
    if method.class_specific:
        other = compute_map(name, result, model=model, x=x, target=[1, 2])
        top = result.logits.argmax(-1)
        if not torch.equal(top, torch.tensor([1, 2])) and (maps.abs().sum() > 0 or other.maps.abs().sum() > 0):
            assert not torch.allclose(other.maps, maps, rtol=1e-3, atol=0), (fam, name)
        if fam == "timm-vit" and name != "gradcam":   # ReLU(Σ α F) may be 0 everywhere at random init
            assert maps.abs().sum() > 0 and other.maps.abs().sum() > 0


def test_definedness_on_the_families():
    # where each method has a meaning, as the methods themselves decide it
    defined = {}
    for fam, (build, size) in FAMILIES.items():
        x = torch.rand(1, 3, size, size)
        r = capture(build(), x)
        defined[fam] = {m.name for m in methods() if m.defined_for(r) is None}
    chained = {"rollout", "grad_rollout", "transformer_attribution"}
    for fam in ("timm-vit", "timm-deit-distilled", "timm-reg4", "timm-cait", "torchvision-vit",
                "nn-transformer-encoder-vit", "demo-vit", "demo-torch-vit"):
        assert defined[fam] == EXPECTED, fam
    assert defined["timm-swin"] == EXPECTED - chained
    assert defined["demo-cnn-selfattn"] == EXPECTED - chained
    assert defined["demo-cnn-attnpool"] == EXPECTED - chained - {"attnlrp"}


def test_export_takes_every_method_from_the_registry():
    model, x = FAMILIES["demo-vit"][0](), torch.rand(1, 3, 64, 64)
    r = capture(model, x)
    arrays, skipped = method_arrays(types.SimpleNamespace(model=model), types.SimpleNamespace(tensor=x), r,
                                    method_names())
    assert not skipped and set(arrays) == EXPECTED
    for name, a in arrays.items():
        if name == "raw":      # the README's contract: every layer and head, (layers, heads, gh, gw)
            assert a.shape == (len(r.maps), r.maps[0].num_heads, 8, 8) and a.dtype == np.float32
            np.testing.assert_array_equal(a[-1].mean(0), compute_map(name, r).maps[0].numpy())
            continue
        assert a.shape == (8, 8) and a.dtype == np.float32
        np.testing.assert_array_equal(a, compute_map(name, r, model=model, x=x).maps[0].numpy())


class _CentreBias(Method):
    """A toy method: the map is 1 at the patch-grid centre, 0 elsewhere (``map[i, j] = [i, j = centre]``)."""

    name = "centre_test"
    label = "Centre (test)"
    summary = "a test method"
    uses_query = False

    def compute(self, ctx):
        _, _, m = resolve_layer(ctx.result, -1)
        gh, gw = m.layout.grid
        maps = torch.zeros(ctx.result.logits.shape[0], gh, gw)
        maps[:, gh // 2, gw // 2] = 1.0
        return MapResult(maps, self.name, m.layout, None, None, "centre")


def test_a_new_method_is_one_class_and_one_register_call(tmp_path):
    from viz_app.views import METHODS
    from attention.cli import main as cli_main
    register(_CentreBias())
    try:
        assert "centre_test" in method_names() and METHODS["centre_test"] == "Centre (test)"
        assert "centre_test" in default_maps()
        model, x = FAMILIES["demo-vit"][0](), torch.rand(1, 3, 64, 64)
        r = capture(model, x)
        arrays, _ = method_arrays(types.SimpleNamespace(model=model), types.SimpleNamespace(tensor=x), r,
                                  ["centre_test"])
        assert arrays["centre_test"][4, 4] == 1 and arrays["centre_test"].sum() == 1
        from PIL import Image
        img = tmp_path / "a.png"
        Image.new("RGB", (64, 64), (10, 200, 30)).save(img)
        assert cli_main(["export", "--model", "demo-vit", "--methods", "centre_test", "--quiet",
                         "--out", str(tmp_path / "out"), str(img)]) == 0
        with np.load(tmp_path / "out" / "a.npz") as z:
            assert z["centre_test"].sum() == 1
    finally:
        unregister("centre_test")
    assert "centre_test" not in METHODS


def test_layer_numbering_is_the_spatial_layers():
    model, size = FAMILIES["timm-swin"][0](), 96
    r = capture(model, torch.rand(1, 3, size, size))
    idx = spatial_layers(r)
    blocks = [n for n, mod in model.named_modules() if type(mod).__name__ == "WindowAttention"]
    assert len(idx) == len(blocks) == 8 and [r.maps[i].name for i in idx] == blocks
    for pos in range(-8, 8):
        p, i, m = resolve_layer(r, pos)
        assert p == pos % 8 and i == idx[p] and m is r.maps[i]
    assert resolve_layer(r, 99)[0] == 7            # a slider clamps
    with pytest.raises(IndexError):
        resolve_layer(r, 99, clamp=False)
    out = compute_map("raw", r, layer=2)
    torch.testing.assert_close(out.maps, received(r.maps[idx[2]]))


def test_cli_export_passes_the_context_to_every_method(tmp_path):
    from PIL import Image
    from attention.methods.raw import raw_cls_maps
    from attention.cli import main as cli_main
    img = tmp_path / "b.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(img)
    assert cli_main(["export", "--model", "demo-vit", "--methods", "all", "--target", "2", "--start-layer", "1",
                     "--end-layer", "2", "--quiet", "--out", str(tmp_path / "out"), str(img)]) == 0
    lm = load_model("demo-vit")
    prepared = lm.prepare(Image.open(img))
    r = lm.capture(prepared)
    with np.load(tmp_path / "out" / "b.npz") as z:
        np.testing.assert_array_equal(z["raw"], raw_cls_maps(r)[0].numpy())     # (layers, heads, gh, gw)
        for name in (n for n in method_names() if n != "raw"):
            want = compute_map(name, r, model=lm.model, x=prepared.tensor, target=2, start_layer=1, end_layer=2)
            np.testing.assert_allclose(z[name], want.maps[0].numpy(), rtol=1e-5, atol=1e-7)


def test_methods_speed_benchmark_prints_its_table():
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": root}
    p = subprocess.run([sys.executable, "-m", "benchmarks.methods_speed", "--model", "vit_tiny_patch16_224",
                        "--rounds", "1"], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line for line in p.stdout.splitlines() if line.startswith("| ")}
    assert {"plain_fwd_bwd_input", "grad_rollout", "attnlrp", "transformer_attribution", "gradcam"} <= set(rows)
    assert float(rows["grad_rollout"].split("|")[3].split()[0]) > 0
