"""Probes behind the suggested fixes in benchmarks/RESULTS.md: ``python benchmarks/probes.py [--threads 1]``.

Each probe times the library's current code against a candidate change (written here, outside the
library), interleaved, after checking that both give the same output.

- gradcam_to_activation: Grad-CAM needs dy_c/dF only at the target layer; `attention.methods.gradcam`
  (through pytorch-grad-cam) calls ``loss.backward()``, which back-propagates through every block
  into every parameter. ``torch.autograd.grad(y_c, F)`` stops at the target layer.
- capture_setup: the fixed Python cost of one `capture` call (instrumenting and restoring the model).
- fusion_fp16: max / min head fusion on float16 maps, converting after the max instead of before.
- import_cost: what `import attention.methods` costs because it imports pytorch-grad-cam eagerly.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def gradcam_to_activation(model, x, target: int, layer, tokens):
    """Grad-CAM with the gradient taken to the target layer's activation only (no parameter gradients)."""
    import torch

    from attention.methods.gradcam import token_reshape
    store = {}
    h = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        with torch.enable_grad():
            out = model(x)
            out = out[0] if isinstance(out, (tuple, list)) else out
            (g,) = torch.autograd.grad(out[:, target].sum(), store["a"])
    finally:
        h.remove()
    reshape = token_reshape(tokens, (x.shape[-2], x.shape[-1]), isinstance(layer, torch.nn.LayerNorm))
    a, g = reshape(store["a"].detach()), reshape(g)
    w = g.mean(dim=(2, 3), keepdim=True)
    return (w * a).sum(dim=1).clamp_min(0)


def probe_gradcam(name: str, rounds: int) -> dict:
    import timm
    import torch

    from attention.families import model_tokens
    from attention.methods.gradcam import default_target_layer, gradcam
    from benchmarks.timing import interleaved
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        target = int(model(x).argmax())
    layer = default_target_layer(model)
    tokens = model_tokens(model, (224, 224))
    ours = gradcam(model, x, target)
    cand = gradcam_to_activation(model, x, target, layer, tokens)
    diff = float((ours - cand).abs().max() / ours.abs().max().clamp_min(1e-30))
    cmp = interleaved({"library": lambda: gradcam(model, x, target),
                       "to_activation": lambda: gradcam_to_activation(model, x, target, layer, tokens)},
                      base="library", rounds=rounds)
    model.zero_grad(set_to_none=True)
    return {"model": name, "max_rel_diff": diff, **cmp}


def probe_capture_setup(rounds: int) -> dict:
    """The fixed cost of one capture: entering and leaving `instrumented` (install every adapter's hooks, flip
    fused attention off, eval mode; then undo it all), against the forward it wraps."""
    import timm
    import torch

    from attention.capture import instrumented
    from benchmarks.timing import measure
    out = {}
    for name in ("vit_tiny_patch16_224", "vit_base_patch16_224"):
        m = timm.create_model(name, pretrained=False).eval()
        x = torch.randn(1, 3, 224, 224)

        def enter_exit():
            with instrumented(m, eval_mode=True):
                pass

        def plain():
            with torch.no_grad():
                m(x)
        out[name] = {"modules": sum(1 for _ in m.modules()), "instrumented_enter_exit": measure(enter_exit, rounds * 4),
                     "plain_forward": measure(plain, max(3, rounds // 2))}
        out[name]["share_of_forward"] = round(out[name]["instrumented_enter_exit"]["median_ms"]
                                              / out[name]["plain_forward"]["median_ms"], 4)
    return out


def probe_fusion(rounds: int) -> dict:
    """rollout on float16 maps: fuse_heads converts the whole (B, H, N, N) to float32 before max / min; taking
    the max in float16 first and converting the (B, N, N) result is exact and converts H times less."""
    import timm
    import torch

    import importlib

    from attention import capture
    from attention.methods.fusion import fuse_heads
    from benchmarks.timing import interleaved
    R = importlib.import_module("attention.methods.rollout")   # the module (the package exports a function)

    def fuse_then_convert(weights, how="mean"):
        if how in ("max", "min"):
            w = weights.amax(dim=1) if how == "max" else weights.amin(dim=1)
            return w.float()
        return fuse_heads(weights, how)

    m = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
    res = capture(m, torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(5)), dtype=torch.float16)
    a = R.rollout(res, head_fusion="max", discard_ratio=0.9)

    def patched():
        R.fuse_heads = fuse_then_convert
        try:
            return R.rollout(res, head_fusion="max", discard_ratio=0.9)
        finally:
            R.fuse_heads = fuse_heads
    b = patched()
    return {"model": "vit_base_patch16_224", "maps": "float16", "equal": bool(torch.equal(a, b)),
            **interleaved({"library": lambda: R.rollout(res, head_fusion="max", discard_ratio=0.9),
                           "max_then_float": patched}, base="library", rounds=rounds * 5, warmup=3)}


def probe_imports() -> dict:
    code = ("import sys, time; t = time.perf_counter(); import {mods}; "
            "print(time.perf_counter() - t, next(int(l.split()[1]) for l in open('/proc/self/status') "
            "if l.startswith('VmRSS:')))")
    rows = {}
    for label, mods in (("torch, timm, cv2, PIL (the CLI's own needs)", "torch, timm, cv2, PIL.Image"),
                        ("attention.methods (imports pytorch_grad_cam)", "torch, timm, cv2, PIL.Image, attention.methods"),
                        ("pytorch_grad_cam alone on top", "torch, timm, cv2, PIL.Image, pytorch_grad_cam")):
        vals = []
        for _ in range(3):
            p = subprocess.run([sys.executable, "-c", code.format(mods=mods)], cwd=ROOT, capture_output=True,
                               text=True, env={**os.environ, "PYTHONPATH": ROOT})
            s, kb = p.stdout.split()
            vals.append((float(s), int(kb)))
        vals.sort()
        rows[label] = {"import_s_median": round(vals[1][0], 2), "rss_after_import_mb": round(vals[1][1] / 1024)}
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    res = {"threads": args.threads, "load": os.getloadavg(),
           "gradcam_to_activation": {n: probe_gradcam(n, args.rounds) for n in ("vit_tiny_patch16_224",
                                                                                 "vit_base_patch16_224")},
           "capture_setup": probe_capture_setup(args.rounds), "fusion_fp16": probe_fusion(args.rounds),
           "imports": probe_imports()}
    text = json.dumps(res, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
