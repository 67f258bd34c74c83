"""One forward and one backward for many maps (`attention.methods.plan`): the maps from the shared pass
against each method's own forward and backward (the library's Grad-CAM, grad-rollout's own capture, the
transformer attribution written out as it was computed before), and the number of passes."""
from __future__ import annotations

import pytest
import timm
import torch

from attention.audit.maps import capture_and_maps
from attention.capture import capture
from attention.methods import compute_map
from attention.methods.chained import chain_weighted
from attention.methods.grad_rollout import attention_gradients, grad_rollout_from
from attention.methods.attnlrp import attention_modules, input_relevance, map_grid, pool_to_grid
from attention.methods.gradcam import gradcam
from attention.methods.lrp_rules import lrp_rules, model_lock
from attention.methods.plan import Needs, compute_maps, gradient_pass
from attention.methods.rollout import rollout_layers

pytestmark = pytest.mark.usefixtures("single_intra_op_thread")
ATOL = 1e-6


def _make(name, **kw):
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=7, **kw).eval()


@pytest.fixture(scope="module")
def vit():
    return _make("vit_tiny_patch16_224", img_size=48, depth=4)


@pytest.fixture(scope="module")
def deit():
    return _make("deit_tiny_distilled_patch16_224", img_size=48, depth=3)


@pytest.fixture(scope="module")
def swin():
    return _make("swin_tiny_patch4_window7_224", img_size=96, embed_dim=24, num_heads=(1, 2, 3, 4), depths=(2, 2, 2, 2))


def _x(size, b=3, seed=1):
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


class Counter:
    """Forwards of the model (a hook on its root) and backwards (calls of torch.autograd.grad)."""

    def __init__(self, model, monkeypatch):
        self.forwards = self.backwards = 0
        self.h = model.register_forward_pre_hook(lambda *a: setattr(self, "forwards", self.forwards + 1))
        grad = torch.autograd.grad

        def counted(*a, **k):
            self.backwards += 1
            return grad(*a, **k)
        monkeypatch.setattr(torch.autograd, "grad", counted)

    def close(self):
        self.h.remove()


@pytest.mark.parametrize("which", ["vit", "deit"])
def test_grad_rollout_from_the_pass_equals_its_own_backward(which, request):
    model = request.getfixturevalue(which)
    x = _x(48)
    r = capture(model, x)
    for target in (None, [1, 4, 6]):
        got = compute_map("grad_rollout", r, model=model, x=x, target=target).maps
        # independent path: a capture with the graph, parameters not frozen, its own backward
        want = grad_rollout_from(capture(model, x, keep_graph=True), target).detach()
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("which,size", [("vit", 48), ("deit", 48), ("swin", 96)])
def test_gradcam_from_the_pass_equals_the_library(which, size, request):
    model = request.getfixturevalue(which)
    x = _x(size)
    r = capture(model, x)
    targets = [2, 0, 5]
    got = compute_map("gradcam", r, model=model, x=x, target=targets).maps
    want = gradcam(model, x, targets)     # pytorch-grad-cam: its own forward, backward and numpy formula
    assert got.shape == want.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def ref_transformer_attribution_weights(model, x, targets):
    """The per-layer Ā as computed before the shared pass: a capture with its graph and the parameters
    live, its own backward; a second capture with the rules and its backward; the formula written out."""
    with torch.enable_grad():
        plain = capture(model, x, keep_graph=True)
        layers = rollout_layers(plain)
        grads = attention_gradients(plain, layers, targets)
        modules = dict(model.named_modules())
        with model_lock(model), lrp_rules(model, [modules[m.name] for m in layers]):
            live = capture(model, x, keep_graph=True)
            lrp = rollout_layers(live)
            g2 = attention_gradients(live, lrp, targets)
    out = []
    for g, m, gl in zip(grads, lrp, g2):
        rel = 0.5 * m.weights.detach().float() * gl.detach().float()
        out.append((g.detach().float() * rel).clamp_min(0).mean(dim=1))
    model.zero_grad(set_to_none=True)
    return out


def test_transformer_attribution_equals_the_formula_written_out(vit):
    x = _x(48)
    r = capture(vit, x)
    targets = torch.tensor([3, 3, 1])
    got = compute_map("transformer_attribution", r, model=vit, x=x, target=targets).maps
    want = chain_weighted(r, ref_transformer_attribution_weights(vit, x, targets))
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("which,size", [("vit", 48), ("deit", 48), ("swin", 96)])
def test_attnlrp_from_the_shared_lrp_pass_equals_its_own_pass(which, size, request):
    model = request.getfixturevalue(which)
    x = _x(size)
    r = capture(model, x)
    targets = torch.tensor([4, 0, 2])
    got = compute_map("attnlrp", r, model=model, x=x, target=targets).maps
    # independent path: the rules, a plain forward (no capture, fused attention) and its own backward
    rel, _ = input_relevance(model, x, targets, attention_modules(model, r))
    want = pool_to_grid(rel.sum(1), *map_grid(r))
    torch.testing.assert_close(got, want, atol=ATOL * max(1.0, float(want.abs().max())), rtol=0)


def test_one_forward_and_one_backward_for_every_gradient_map(vit, monkeypatch):
    x = _x(48)
    c = Counter(vit, monkeypatch)
    try:
        result, maps = compute_maps(["rollout", "grad_rollout", "gradcam"], vit, x)
    finally:
        c.close()
    assert (c.forwards, c.backwards) == (1, 1)
    # the pass's own forward is the capture: the same logits and attention as a plain capture
    plain = capture(vit, x)
    torch.testing.assert_close(result.logits, plain.logits, atol=0, rtol=0)
    for a, b in zip(result.maps, plain.maps):
        torch.testing.assert_close(a.weights, b.weights, atol=0, rtol=0)
    for name, m in maps.items():
        torch.testing.assert_close(m.maps, compute_map(name, plain, model=vit, x=x).maps, atol=ATOL, rtol=0)
    assert all(p.requires_grad and p.grad is None for p in vit.parameters())


def test_switching_methods_reuses_the_pass(vit, monkeypatch):
    """The app's case: one cache per (image, model); a second gradient method for the same class costs
    no forward, another class one pass."""
    x = _x(48, 1)
    r = capture(vit, x)
    store = {}

    def cache(key, compute):
        if key not in store:
            store[key] = compute()
        return store[key]
    c = Counter(vit, monkeypatch)
    try:
        compute_map("grad_rollout", r, model=vit, x=x, target=2, cache=cache)
        assert (c.forwards, c.backwards) == (1, 1)
        compute_map("gradcam", r, model=vit, x=x, target=2, cache=cache)
        compute_map("grad_rollout", r, model=vit, x=x, target=2, cache=cache, start_layer=1)
        assert (c.forwards, c.backwards) == (1, 1)
        compute_map("transformer_attribution", r, model=vit, x=x, target=2, cache=cache)
        assert (c.forwards, c.backwards) == (2, 2)          # its pass with the LRP rules only
        compute_map("attnlrp", r, model=vit, x=x, target=2, cache=cache)
        assert (c.forwards, c.backwards) == (2, 2)          # the same pass with the rules
        compute_map("gradcam", r, model=vit, x=x, target=5, cache=cache)
        assert (c.forwards, c.backwards) == (3, 3)
    finally:
        c.close()


def test_the_pass_freezes_parameters_and_restores_them(vit):
    frozen = vit.head.weight
    frozen.requires_grad_(False)
    try:
        gp = gradient_pass(vit, _x(48, 2), None, Needs(True, ("blocks.3.norm1",)))
        assert all(p.requires_grad == (p is not frozen) for p in vit.parameters())
        assert all(p.grad is None for p in vit.parameters())
        a, g = gp.activations["blocks.3.norm1"]
        assert a.shape == g.shape == (2, 10, 192) and not a.requires_grad
        assert len(gp.attention_gradients) == len(gp.result.maps) == 4
        assert not vit.training
    finally:
        frozen.requires_grad_(True)


def test_audit_batch_maps_equal_the_per_method_path(deit):
    x = _x(48, 4)
    result, maps = capture_and_maps(deit, x, ["rollout", "grad_rollout", "gradcam"])
    plain = capture(deit, x)
    torch.testing.assert_close(result.logits, plain.logits, atol=0, rtol=0)
    for name, m in maps.items():
        assert m.dtype == torch.float32 and m.device.type == "cpu"
        torch.testing.assert_close(m, compute_map(name, plain, model=deit, x=x).maps.float(), atol=ATOL, rtol=0)


def test_cli_export_maps_equal_the_per_method_path(tmp_path):
    """`python -m attention export` shares one pass per image (a cache per image): same maps as computing
    each method alone on the same input."""
    import numpy as np

    from attention.cli import main as cli_main
    from attention.models import demo_names, load_model
    if "demo-vit" not in demo_names():
        pytest.skip("bundled demo-vit missing")
    from PIL import Image
    img = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(img)
    names = ["grad_rollout", "gradcam", "transformer_attribution", "attnlrp"]
    assert cli_main(["export", "--model", "demo-vit", "--device", "cpu", "--methods", ",".join(names), "--quiet",
                     "--out", str(tmp_path / "out"), str(img)]) == 0
    z = np.load(tmp_path / "out" / "a.npz")
    lm = load_model("demo-vit")
    x = torch.from_numpy(z["input"])
    r = capture(lm.model, x)
    for n in names:
        want = compute_map(n, r, model=lm.model, x=x).maps[0].numpy()
        np.testing.assert_allclose(z[n], want, atol=ATOL * max(1.0, float(np.abs(want).max())), rtol=0, err_msg=n)


def test_app_switching_gradient_methods_reuses_the_pass():
    """In the app (its callbacks, the real demo-vit): after the analysis, the first gradient method of a
    class runs one forward; Grad-CAM and grad-rollout for that class then run none; transformer
    attribution adds only its pass with the rules, which AttnLRP then reuses."""
    import numpy as np

    from attention.models import demo_names
    if "demo-vit" not in demo_names():
        pytest.skip("bundled demo-vit missing")
    from attention.demo.shapes import make_sample
    from viz_app.callbacks import Callbacks
    from viz_app.models import ModelManager
    from viz_app.state import SessionStore
    from viz_app.views import View
    from PIL import Image
    cb = Callbacks(ModelManager(max_models=1), SessionStore(max_entries=4, max_per_session=2))
    model = cb.manager.get("demo-vit").model
    calls = []
    h = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        img, _, _ = make_sample(np.random.default_rng(3), 64, 1)
        a = cb.analyse("s-pass", Image.fromarray(img), "demo-vit")
        assert len(calls) == 1
        for method, after in (("gradcam", 2), ("grad_rollout", 2), ("transformer_attribution", 3), ("attnlrp", 3),
                              ("gradcam", 3)):
            pic, _ = cb.render("s-pass", "demo-vit", a.image_sha, View(method=method))
            assert pic.dtype == np.uint8 and len(calls) == after, (method, len(calls))
    finally:
        h.remove()


def test_the_pass_provides_what_is_defined_and_asked(vit, swin):
    """Where gradient-weighted rollout has no meaning (Swin) the app's pass is Grad-CAM's alone (its backward
    stops at its layer); the audit's pass holds exactly what its maps ask for."""
    from attention.methods.base import MethodContext
    from attention.methods.plan import standard_needs
    x = _x(96, 1)
    s = standard_needs(MethodContext(capture(swin, x), model=swin, x=x))
    assert not s.attention_gradients and s.activations == ("layers.3.blocks.1.norm1",)
    v = standard_needs(MethodContext(capture(vit, _x(48, 1)), model=vit, x=_x(48, 1)))
    assert v.attention_gradients and v.activations == ("blocks.3.norm1",)
    result, maps = compute_maps(["gradcam"], swin, x, target=[3])
    torch.testing.assert_close(maps["gradcam"].maps, gradcam(swin, x, [3]), atol=ATOL, rtol=0)
