"""Cost of every class-specific method against one plain forward + backward: ``python -m benchmarks.methods_speed``.

Model: timm ``vit_base_patch16_224`` with random weights (timing only), one 224 x 224 image, 1 torch
thread. Baseline: the untouched model's forward and the backward of the top-1 logit to the input
image (no parameter gradients: the tightest plain baseline). Each method runs through
`attention.methods.compute_map` from a finished capture without graph (what the app and the CLI
do), with no cache, so every call pays its forwards and backwards. All sides interleaved in one
process (order alternating per round); the ratio is the median of per-round ratios.

Prints a markdown table (paste it into benchmarks/RESULTS.md) and, with ``--json``, the raw numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from benchmarks.timing import interleaved, threads  # noqa: E402

METHODS = ("grad_rollout", "attnlrp", "transformer_attribution", "gradcam")
GOALS = {"grad_rollout": 1.15}


def run(model_name: str = "vit_base_patch16_224", rounds: int = 10, methods=METHODS) -> dict:
    import timm

    from attention.capture import capture
    from attention.methods import compute_map

    torch.manual_seed(0)
    model = timm.create_model(model_name, pretrained=False).eval()
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    result = capture(model, x)
    target = int(result.logits.argmax())

    def plain():
        xg = x.clone().requires_grad_(True)
        with torch.enable_grad():
            torch.autograd.grad(model(xg)[0, target], xg)

    sides = {"plain_fwd_bwd_input": plain}
    for name in methods:
        sides[name] = (lambda n=name: compute_map(n, result, model=model, x=x, target=target))
    out = interleaved(sides, base="plain_fwd_bwd_input", rounds=rounds)
    out.update({"model": model_name, "threads": torch.get_num_threads(), "target": target,
                "torch": torch.__version__, "timm": timm.__version__})
    return out


def markdown(res: dict) -> str:
    ratios = res["ratio_to_plain_fwd_bwd_input"]
    lines = [f"{res['model']}, random init, 224 x 224, {res['threads']} thread, {res['sides']['plain_fwd_bwd_input']['n']} "
             f"interleaved rounds; load {res['load_before']} -> {res['load_after']}; torch {res['torch']}, timm {res['timm']}.",
             "", "| method (through compute_map) | median ms (min–max) | ÷ plain forward + backward to the input | goal |",
             "|---|---|---|---|"]
    for name, s in res["sides"].items():
        if name == "plain_fwd_bwd_input":
            ratio, goal = "1 (baseline)", "–"
        else:
            r = ratios[name]
            ratio = f"{r['median']:.3f} ({r['min']:.2f}–{r['max']:.2f})"
            g = GOALS.get(name)
            goal = f"≤ {g} **{'met' if r['median'] <= g else 'missed'}**" if g else "–"
        lines.append(f"| {name} | {s['median_ms']:.0f} ({s['min_ms']:.0f}–{s['max_ms']:.0f}) | {ratio} | {goal} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vit_base_patch16_224")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    with threads(a.threads):
        res = run(a.model, a.rounds, a.methods)
    print(markdown(res))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
