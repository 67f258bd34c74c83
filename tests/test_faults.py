"""Faults: exceptions inside a capture, models that fail to load, clients that go away, concurrent sessions.

Everything runs the real model path (timm / torchvision models with random weights, or the bundled
demo-vit for the served-app test); nothing of the model path is mocked.
"""
from __future__ import annotations

import hashlib
import importlib
import os
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

import torch.nn.functional as F

from attention import interception
from attention.capture import capture
from attention.models import demo_names
from concurrency import run_in_threads

capture_mod = importlib.import_module("attention.capture")   # the module (the package exports the function)

TINY = "vit_tiny_patch16_224"

needs_demo = pytest.mark.skipif("demo-vit" not in demo_names(),
                                reason="assets/demo-vit.safetensors/.json missing (python -m attention.demo train "
                                       "--arch demo-vit)")


def hook_counts(model: torch.nn.Module) -> dict[str, tuple[int, int, int, int]]:
    """Per module: forward hooks, forward pre-hooks, backward hooks, instance attributes patched over methods."""
    return {name: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
                   int("forward" in vars(m)))
            for name, m in model.named_modules()}


def fused_flags(model: torch.nn.Module) -> dict[str, tuple[bool, object]]:
    """Per module with ``fused_attn``: (set on the instance?, value)."""
    return {name: ("fused_attn" in vars(m), getattr(m, "fused_attn"))
            for name, m in model.named_modules() if hasattr(m, "fused_attn")}


def photo(seed: int, size: int = 224) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def vit_tiny():
    import timm
    torch.manual_seed(0)
    model = timm.create_model(TINY, pretrained=False).eval()
    return model


# ------------------------------------------------------------------------------ (a) exception in a capture
def test_exception_inside_capture_restores_fused_attn_and_hooks(vit_tiny):
    model = vit_tiny
    x = torch.randn(1, 3, 224, 224)
    flags_before, hooks_before = fused_flags(model), hook_counts(model)
    assert len(flags_before) == 12
    seen_inside = {}

    def boom(module, args, output):
        seen_inside["fused"] = fused_flags(model)
        seen_inside["hooks"] = hook_counts(model)
        seen_inside["patched"] = F.scaled_dot_product_attention is interception._sdpa
        raise RuntimeError("hook failure in block 5")

    handle = model.blocks[5].register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="hook failure in block 5"):
            capture(model, x)
    finally:
        handle.remove()
    # the capture really was running when the failure happened (the attention ops were patched), and it
    # never touched the model: fused flags and hooks as they were, apart from the test's own hook ...
    assert seen_inside["patched"]
    assert seen_inside["fused"] == flags_before
    assert sum(h[0] for h in seen_inside["hooks"].values()) == sum(h[0] for h in hooks_before.values()) + 1
    # ... and everything is back as it was
    assert F.scaled_dot_product_attention is interception._SDPA and interception._users == 0
    assert fused_flags(model) == flags_before
    assert hook_counts(model) == hooks_before
    assert model not in capture_mod._flags and capture_mod._current.get() is None
    assert not model.training
    # the model still captures normally afterwards: 12 layers of (1, 3, 197, 197) row-stochastic maps
    res = capture(model, x)
    assert len(res.maps) == 12 and tuple(res.maps[0].weights.shape) == (1, 3, 197, 197)
    torch.testing.assert_close(res.maps[-1].weights.sum(-1), torch.ones(1, 3, 197))
    with torch.no_grad():
        torch.testing.assert_close(res.logits, model(x))
    assert fused_flags(model) == flags_before and hook_counts(model) == hooks_before


def test_exception_in_training_mode_model_restores_training_flags(vit_tiny):
    model = vit_tiny
    model.train()
    try:
        modes = {n: m.training for n, m in model.named_modules()}
        handle = model.blocks[0].register_forward_pre_hook(lambda m, a: (_ for _ in ()).throw(ValueError("pre")))
        try:
            with pytest.raises(ValueError, match="pre"):
                capture(model, torch.randn(1, 3, 224, 224))
        finally:
            handle.remove()
        assert {n: m.training for n, m in model.named_modules()} == modes
        assert model not in capture_mod._flags and interception._users == 0
    finally:
        model.eval()


# ------------------------------------------------------------------------------ (c, in-process) interrupted capture
def tiny_torchvision_vit():
    from torchvision.models.vision_transformer import VisionTransformer
    torch.manual_seed(1)
    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                             num_classes=5).eval()


@pytest.mark.parametrize("fastpath", [True, False])
def test_keyboard_interrupt_mid_capture_leaves_nothing_behind(fastpath):
    model = tiny_torchvision_vit()
    x = torch.randn(1, 3, 32, 32)
    saved = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(fastpath)
    try:
        hooks_before = hook_counts(model)
        inside = {}

        def interrupt(module, args, output):
            inside["fastpath"] = torch.backends.mha.get_fastpath_enabled()
            inside["instrumented"] = model in capture_mod._flags and F.softmax is interception._f_softmax
            raise KeyboardInterrupt

        handle = model.encoder.layers[1].register_forward_hook(interrupt)
        try:
            with pytest.raises(KeyboardInterrupt):
                capture(model, x)
        finally:
            handle.remove()
        assert inside == {"fastpath": False, "instrumented": True}
        assert hook_counts(model) == hooks_before
        assert model not in capture_mod._flags and F.softmax is interception._F_SOFTMAX
        assert torch.backends.mha.get_fastpath_enabled() is fastpath
        assert capture_mod._current.get() is None
        res = capture(model, x)        # still works, and restores again
        assert len(res.maps) == 2 and tuple(res.maps[0].weights.shape) == (1, 2, 17, 17)
        assert torch.backends.mha.get_fastpath_enabled() is fastpath
        assert hook_counts(model) == hooks_before and model not in capture_mod._flags
    finally:
        torch.backends.mha.set_fastpath_enabled(saved)


def test_interrupted_capture_while_another_capture_runs(vit_tiny):
    """One capture fails while a second one is inside the same model: the survivor still gets its maps,
    and the model is restored only when the last one leaves."""
    model = vit_tiny
    flags_before, hooks_before = fused_flags(model), hook_counts(model)
    both_inside = threading.Barrier(2, timeout=30)
    results = {}

    def gate(module, args):
        if threading.current_thread().name in ("good", "bad"):
            both_inside.wait()
            if threading.current_thread().name == "bad":
                raise KeyboardInterrupt

    handle = model.blocks[3].register_forward_pre_hook(gate)

    seeds = {"good": 1, "bad": 2}

    def run(name):
        results[name] = capture(model, torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(seeds[name])))

    try:
        errors = run_in_threads(run, seeds, timeout=60)
    finally:
        handle.remove()
    assert isinstance(errors.get("bad"), KeyboardInterrupt) and "good" not in errors
    assert len(results["good"].maps) == 12
    ref = capture(model, torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1)))
    torch.testing.assert_close(results["good"].logits, ref.logits)
    for a, b in zip(results["good"].maps, ref.maps):
        torch.testing.assert_close(a.weights, b.weights)
    assert fused_flags(model) == flags_before and hook_counts(model) == hooks_before
    assert model not in capture_mod._flags and interception._users == 0


# ------------------------------------------------------------------------------ (b) failed loads at run time
@pytest.fixture(scope="module")
def callbacks():
    from viz_app.callbacks import Callbacks
    from viz_app.models import ModelManager
    return Callbacks(ModelManager(max_models=2, pretrained=False))


def test_failed_loads_leave_the_serving_model_in_place(callbacks, tmp_path):
    import gradio as gr
    import timm
    from safetensors.torch import save_file

    from attention.errors import CheckpointError
    cb = callbacks
    img = photo(11)
    labels, picture, meta = cb.predict("s-load", img, TINY)
    assert meta["model"] == TINY and len(labels) == 5
    serving = cb.manager.get(TINY)
    loads, names, choices = cb.manager.loads, cb.manager.loaded_names(), cb.manager.choices()

    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{not json at all" + os.urandom(256))
    other = tmp_path / "resnet.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("resnet10t", pretrained=False).state_dict().items()},
              str(other))
    truncated = tmp_path / "truncated.safetensors"
    save_file({k: v.contiguous() for k, v in serving.model.state_dict().items()}, str(truncated))
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])

    for bad, expected in ((corrupt, "could not|corrupt|safetensors|read"), (other, "missing keys|unexpected keys|is it a vit_tiny_patch16_224 checkpoint"),
                          (truncated, "could not|corrupt|safetensors|read|incomplete")):
        with pytest.raises(CheckpointError, match=f"(?i){expected}"):
            cb.manager.register(TINY, str(bad))
        # the model that was serving keeps serving, nothing new appeared, nothing was evicted
        assert cb.manager.loaded_names() == names and cb.manager.choices() == choices
        assert cb.manager.get(TINY) is serving and cb.manager.loads == loads
        labels2, picture2, meta2 = cb.predict("s-load", img, TINY)
        assert meta2["cached"] and meta2["predictions"] == meta["predictions"]
        assert np.array_equal(picture2, picture)

    # a named model whose checkpoint breaks at first use (e.g. --checkpoint on the command line)
    from viz_app.models import ModelSpec
    cb.manager.add_spec(ModelSpec("broken-own-model", TINY, str(other)))
    with pytest.raises(gr.Error, match="is it a vit_tiny_patch16_224 checkpoint|missing keys|could not be loaded"):
        cb.predict("s-load", img, "broken-own-model")
    assert cb.manager.loaded_names() == names and cb.manager.get(TINY) is serving
    # a fresh session on the serving model computes the same answer as before
    labels3, picture3, meta3 = cb.predict("s-load-2", img, TINY)
    assert not meta3["cached"] and meta3["predictions"] == meta["predictions"]
    assert meta3["input_sha256"] == meta["input_sha256"]


# ------------------------------------------------------------------------------ (d) concurrent sessions
def test_two_sessions_at_the_same_time_never_see_each_others_results(callbacks):
    cb = callbacks
    loaded = cb.manager.get(TINY)
    images = {"alice": photo(21), "bob": photo(22, 160)}
    reference = {s: loaded.capture(loaded.prepare(im), dtype=torch.float16) for s, im in images.items()}
    from viz_app.callbacks import pixels_sha256
    shas = {s: pixels_sha256(im) for s, im in images.items()}
    assert shas["alice"] != shas["bob"]

    together = threading.Barrier(2, timeout=30)

    def both_forwards_overlap(module, args):     # the two forward passes are inside the model at once
        if threading.current_thread().name in images:
            together.wait()

    out = {s: [] for s in images}

    def session(name):
        for k in range(3):
            sess = f"{name}-{k}"                  # a new session each round: a real forward pass each time
            labels, picture, meta = cb.predict(sess, images[name], TINY)
            out[name].append((sess, labels, picture, meta, cb.find(sess, TINY, meta["input_sha256"])))

    handle = loaded.model.blocks[6].register_forward_pre_hook(both_forwards_overlap)
    try:
        errors = run_in_threads(session, images)
    finally:
        handle.remove()
    assert not errors, errors
    for name, rounds in out.items():
        assert len(rounds) == 3
        for sess, labels, picture, meta, analysis in rounds:
            assert not meta["cached"]
            assert meta["input_sha256"] == shas[name]
            assert analysis is not None and analysis.image_sha == shas[name]
            ref = reference[name]
            torch.testing.assert_close(analysis.result.logits, ref.logits.float(), rtol=1e-4, atol=1e-4)
            for got, want in zip(analysis.result.maps, ref.maps):
                torch.testing.assert_close(got.weights, want.weights, rtol=2e-3, atol=2e-3)
            # the other session's image is not reachable from this session
            other = next(s for s in images if s != name)
            assert cb.find(sess, TINY, shas[other]) is None
    # both images give different answers, so the equality above is a real check
    assert not torch.allclose(reference["alice"].logits, reference["bob"].logits)
    assert TINY in cb.manager.loaded_names() and loaded.model not in capture_mod._flags


# ------------------------------------------------------------------------------ (c) clients that go away
def _pixels_sha(path: str) -> str:
    return hashlib.sha256(np.asarray(Image.open(path).convert("RGB")).tobytes()).hexdigest()


@needs_demo
def test_clients_that_disconnect_mid_request_leave_the_server_working(tmp_path):
    import httpx
    from gradio_client import Client, handle_file

    from attention.demo.shapes import CLASS_NAMES, make_sample
    from viz_app.testing import served_app

    paths = []
    for k, label in enumerate((1, 4)):
        img, _, _ = make_sample(np.random.default_rng(900 + k), 64, label)
        p = tmp_path / f"{CLASS_NAMES[label]}.png"
        Image.fromarray(img).save(p)
        paths.append(str(p))
    big = tmp_path / "big.png"
    photo(5, 512).save(big)

    with served_app("--model", "demo-vit") as url:
        # reference answers from a well-behaved client
        ref = Client(url, verbose=False)
        ref_answers = [ref.predict(handle_file(p), "demo-vit", api_name="/predict") for p in paths]
        assert [a[2]["input_sha256"] for a in ref_answers] == [_pixels_sha(p) for p in paths]

        # 1. gradio_client jobs cancelled at once, and clients closed while their job runs
        for k in range(4):
            c = Client(url, verbose=False)
            job = c.submit(handle_file(str(big)), "demo-vit", api_name="/predict")
            time.sleep(0.05 * k)
            job.cancel()
            if k % 2:
                c.close()

        # 2. raw HTTP: start a call, open its event stream and hang up after the first bytes (or none)
        base = url.rstrip("/") + "/gradio_api"
        with httpx.Client(timeout=30) as http:
            up = http.post(f"{base}/upload", files={"files": ("big.png", big.read_bytes(), "image/png")})
            up.raise_for_status()
            server_path = up.json()[0]
            for read_first in (False, True):
                r = http.post(f"{base}/call/predict", json={"data": [
                    {"path": server_path, "meta": {"_type": "gradio.FileData"}}, "demo-vit"]})
                r.raise_for_status()
                event_id = r.json()["event_id"]
                with http.stream("GET", f"{base}/call/predict/{event_id}") as s:
                    if read_first:
                        next(s.iter_bytes(), None)
                    # leaving the block closes the connection before the answer was read

        # the server still answers correctly, to several sessions at once (no lock or hook left behind)
        answers = {}

        def ask(k):
            answers[k] = Client(url, verbose=False).predict(handle_file(paths[k % 2]), "demo-vit", api_name="/predict")
        errors = run_in_threads(ask, range(4))
        assert not errors and len(answers) == 4, errors
        for k, (labels, heatmap, meta) in answers.items():
            want = ref_answers[k % 2]
            assert meta["input_sha256"] == _pixels_sha(paths[k % 2])
            assert not meta["cached"]                               # a new session: a real forward pass
            assert meta["predictions"] == want[2]["predictions"]
            assert labels["label"] == CLASS_NAMES[(1, 4)[k % 2]]
            # the same attention picture as before the disconnects: the capture is intact
            assert np.array_equal(np.asarray(Image.open(heatmap)), np.asarray(Image.open(want[1])))
