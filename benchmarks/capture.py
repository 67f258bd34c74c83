"""Capture overhead: ``capture(model, x)`` against the plain fused forward and timm's ``AttentionExtract``.

One interleaved run per model at 1 torch thread (``python -m benchmarks.capture``):
- ``plain``: ``model(x)`` under ``no_grad`` with timm's default fused attention (no maps);
- ``capture``: ours on the same, untouched model (logits + every map);
- ``timm_extract``: ``timm.utils.AttentionExtract`` in hook mode on a copy with ``fused_attn = False``
  (its only working mode on an existing model; it returns the maps and throws the logits away).
Run twice, in two processes (the allocator setting cannot be undone in one): with glibc's default
allocator, and with `attention.allocator.keep_freed_memory()` as the app and the CLIs run it.
Goals (issue 12): capture ÷ plain ≤ 1.10 on demo-vit at 64 px, ≤ 1.05 on ViT-Ti and ViT-B at 224;
capture ÷ timm_extract ≤ 1.0. Prints a markdown table and writes benchmarks/capture.json.
"""
from __future__ import annotations

import argparse
import json
import os

import torch

from attention import capture
from benchmarks.peers import unfused_copy
from benchmarks.timing import interleaved, load, machine, threads


def _models():
    import timm
    from attention.models import load_model
    yield "demo-vit (64 px)", load_model("demo-vit").model, (64, 64)
    yield "ViT-Ti/16 (224 px)", timm.create_model("vit_tiny_patch16_224", pretrained=False), (224, 224)
    yield "ViT-B/16 (224 px)", timm.create_model("vit_base_patch16_224", pretrained=False), (224, 224)


def run(rounds: int = 30) -> dict:
    from timm.utils import AttentionExtract
    out = {"machine": machine(), "rows": []}
    with threads(1):
        for name, model, hw in _models():
            model.eval()
            x = torch.randn(1, 3, *hw)
            peer = AttentionExtract(unfused_copy(model), method="hook")
            with torch.no_grad():
                n_ours = len(capture(model, x).maps)
                n_peer = len(peer(x))
            assert n_ours == n_peer, (name, n_ours, n_peer)

            def plain():
                with torch.no_grad():
                    model(x)

            def extract():
                with torch.no_grad():
                    peer(x)

            def dropped():
                """The capture with every map thrown away as it is recorded: what computing the weights costs
                without keeping them (the rest of capture's time is keeping 12 fresh matrices alive)."""
                from attention.capture import CaptureSession
                add = CaptureSession.add
                CaptureSession.add = lambda *a, **k: None
                try:
                    capture(model, x)
                finally:
                    CaptureSession.add = add

            r = interleaved({"plain": plain, "capture": lambda: capture(model, x), "timm_extract": extract,
                             "maps_dropped": dropped}, base="plain", rounds=rounds, warmup=3)
            from benchmarks.timing import ratio_stats
            times = r.pop("times")
            r["capture_vs_extract"] = ratio_stats([a / b for a, b in zip(times["capture"], times["timm_extract"])])
            out["rows"].append({"model": name, "maps": n_ours, **r})
    return out


def table(out: dict) -> str:
    lines = ["| model | maps | plain (ms) | capture (ms) | timm AttentionExtract (ms) | capture ÷ plain | "
             "capture ÷ AttentionExtract | weights computed, not kept ÷ plain |",
             "|---|---|---|---|---|---|---|---|"]
    for r in out["rows"]:
        s = r["sides"]
        lines.append(f"| {r['model']} | {r['maps']} | {s['plain']['median_ms']:.2f} | {s['capture']['median_ms']:.2f} | "
                     f"{s['timm_extract']['median_ms']:.2f} | {r['ratio_to_plain']['capture']['median']:.3f} | "
                     f"{r['capture_vs_extract']['median']:.3f} | {r['ratio_to_plain']['maps_dropped']['median']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--allocator", choices=("both", "default", "app"), default="both",
                    help="glibc defaults, the app's setting (keep_freed_memory), or both in two processes")
    args = ap.parse_args(argv)
    if args.allocator == "both":
        import subprocess
        import sys
        outs = {}
        for mode in ("default", "app"):
            subprocess.run([sys.executable, "-m", "benchmarks.capture", "--rounds", str(args.rounds),
                            "--allocator", mode], check=True)
            with open(_json_path(mode), encoding="utf-8") as f:
                outs[mode] = json.load(f)
        with open(_json_path(None), "w", encoding="utf-8") as f:
            json.dump(outs, f, indent=1)
        return 0
    if args.allocator == "app":
        from attention.allocator import keep_freed_memory
        keep_freed_memory()
    out = run(args.rounds)
    out["allocator"] = args.allocator
    print(f"allocator: {args.allocator}; load before {out['machine']['load_at_start']}, after {load()}; "
          f"1 torch thread; medians of {args.rounds} interleaved rounds")
    print(table(out))
    with open(_json_path(args.allocator), "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
    return 0


def _json_path(mode) -> str:
    if mode is None:
        return os.path.join(os.path.dirname(__file__), "capture.json")
    import tempfile
    return os.path.join(tempfile.gettempdir(), f"attention_benchmark_capture_{mode}.json")


if __name__ == "__main__":
    raise SystemExit(main())
