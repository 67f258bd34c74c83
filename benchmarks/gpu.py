"""On an accelerator (or whatever device it finds): ``python -m benchmarks.gpu [--device auto] [--quick]``.

Prints markdown tables for the device `attention.device.resolve_device` picks:

1. **Capture ÷ plain forward**: ``capture(model, x)`` (logits + every attention map, the attention written
   out) against ``model(x)`` with timm's fused attention kernel (``F.scaled_dot_product_attention``),
   both under ``no_grad``, for ViT-B/16 and ViT-L/16 (random init, 224 px) at batch 1 and 64, float32
   and bfloat16; interleaved rounds (`benchmarks.timing.interleaved`), the device synchronised after
   every call; the peak device memory of each side (CUDA: ``max_memory_allocated``; MPS: the driver's
   allocation after the call; CPU: not measured).
2. **The audit against a forward + backward loop**: ``run_audit`` (rollout, grad_rollout, gradcam, no
   deletion curves, its own images/s from ``report.json``: images decoded by DataLoader workers, batches
   on the device) against a loop of forward + backward of each item's top class to the input with the
   parameters frozen, at the same batch size on the same device (images/s). Goal: ≥ 0.8 of the loop.

``--quick``: ViT-B/16 only, batch 1 and 2, float32 and bfloat16, 8 audit images (minutes on a CPU);
it checks the script, its numbers are not GPU numbers.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from attention.device import describe, resolve_device, synchronize  # noqa: E402
from benchmarks.timing import interleaved, load  # noqa: E402

MODELS = {"ViT-B/16": "vit_base_patch16_224", "ViT-L/16": "vit_large_patch16_224"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def peak_memory(device: torch.device, fn) -> float | None:
    """MiB of device memory at the peak of ``fn()`` (None on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    if device.type == "mps":
        fn()
        torch.mps.synchronize()
        return torch.mps.driver_allocated_memory() / 2 ** 20
    fn()
    return None


def _mib(v) -> str:
    return "n/a" if v is None else f"{v:.0f}"


def capture_table(device: torch.device, models, batches, dtypes, rounds: int) -> None:
    import timm

    from attention import capture
    print(f"## Capture ÷ plain fused forward on {describe(device)} (`python -m benchmarks.gpu`, "
          f"{time.strftime('%Y-%m-%d')})\n")
    print(f"Random init, 224×224, `no_grad`, {rounds} interleaved rounds, median (min–max) of the per-round "
          f"ratio; peak device memory of one call. Load average before: {load()}.\n")
    print("| model | batch | dtype | plain ms | capture ms | capture ÷ plain | plain peak MiB | capture peak MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for label in models:
        for dname in dtypes:
            try:
                model = timm.create_model(MODELS[label], pretrained=False).eval().to(device, DTYPES[dname])
            except (RuntimeError, TypeError) as e:     # e.g. a device without bf16
                print(f"| {label} | – | {dname} | not run: {str(e).splitlines()[0]} | | | | |")
                continue
            for b in batches:
                x = torch.randn(b, 3, 224, 224, device=device, dtype=DTYPES[dname])

                def plain():
                    with torch.no_grad():
                        model(x)
                    synchronize(device)

                def cap():
                    capture(model, x)
                    synchronize(device)
                r = interleaved({"plain": plain, "capture": cap}, "plain", rounds=rounds)
                ratio = r["ratio_to_plain"]["capture"]
                mp, mc = peak_memory(device, plain), peak_memory(device, cap)
                print(f"| {label} | {b} | {dname} | {r['sides']['plain']['median_ms']:.1f} | "
                      f"{r['sides']['capture']['median_ms']:.1f} | **{ratio['median']:.2f}** "
                      f"({ratio['min']:.2f}–{ratio['max']:.2f}) | {_mib(mp)} | {_mib(mc)} |")
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()


def forward_backward_rate(model, device: torch.device, batch: int, n_images: int) -> float:
    """Images/s of forward + backward of each item's top class to the input, parameters frozen."""
    from attention.modelstate import preserved
    x = torch.randn(batch, 3, 224, 224, device=device)
    steps = max(1, n_images // batch)

    def step():
        with preserved(model, eval_mode=True, freeze=True), torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logits = model(xg)
            y = logits.gather(1, logits.detach().argmax(-1)[:, None]).sum()
            torch.autograd.grad(y, xg)
    step()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return steps * batch / (time.perf_counter() - t0)


def audit_table(device: torch.device, model_name: str, batch: int, n_images: int, loader_workers) -> None:
    from attention.audit import run_audit
    from attention.demo.shapes import write_dataset
    from attention.models import load_model
    d = tempfile.mkdtemp(prefix="bench_gpu_")
    write_dataset(n_images, 8, d, size=224)
    data = os.path.join(d, "images")
    kw = dict(methods=["rollout", "grad_rollout", "gradcam"], random_init=True, batch_size=batch,
              shard_size=max(batch, n_images), faithfulness_steps=0, device=str(device), quiet=True, html=False,
              log=lambda s: None, loader_workers=loader_workers)
    run_audit(data, tempfile.mkdtemp(prefix="bench_gpu_out_"), model_name, **kw)          # warm-up
    peak = [None]

    def audit():
        o = run_audit(data, tempfile.mkdtemp(prefix="bench_gpu_out_"), model_name, **kw)
        peak[0] = o.report["run"]
    mem = peak_memory(device, audit)
    run = peak[0]
    lm = load_model(model_name, pretrained=False, device=device)
    loop = forward_backward_rate(lm.model, device, batch, n_images)
    rate = run["images_per_second"]
    print(f"\n## The audit on {describe(device)} against a forward + backward loop\n")
    print(f"{model_name} (random init, 224×224), {n_images} images, batch {batch}, methods rollout, grad_rollout, "
          f"gradcam, no deletion curves; {run['loader_workers']} DataLoader worker(s) decoding. The audit's rate is "
          f"report.json's `images_per_second` (the engine's run: decoding, maps, statistics, shards). Goal ≥ 0.8.\n")
    print("| | images/s | ÷ loop | peak device MiB |")
    print("|---|---|---|---|")
    print(f"| forward + backward to the input (parameters frozen) | {loop:.1f} | 1.00 | |")
    print(f"| audit (`run_audit`, device {run['device']}) | {rate:.1f} | **{rate / loop:.2f}** | {_mib(mem)} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--audit-images", type=int, default=512)
    p.add_argument("--audit-batch", type=int, default=64)
    p.add_argument("--loader-workers", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="ViT-B only, batch 1 and 2, 8 audit images (a check)")
    a = p.parse_args(argv)
    from attention.errors import UserError
    try:
        device = resolve_device(a.device)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    models, batches = list(MODELS), [1, 64]
    if a.quick:
        models, batches, a.rounds, a.audit_images, a.audit_batch = ["ViT-B/16"], [1, 2], 2, 8, 4
    print(f"Device: {describe(device)}; torch {torch.__version__}.\n")
    capture_table(device, models, batches, list(DTYPES), a.rounds)
    audit_table(device, MODELS["ViT-B/16"], a.audit_batch, a.audit_images, a.loader_workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
