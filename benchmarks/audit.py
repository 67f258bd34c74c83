"""Speed of the dataset audit: ``python -m benchmarks.audit [--images 240] [--rounds 2] [--quick]``.

On the shapes dataset with the bundled demo-vit (the default methods rollout, grad_rollout, gradcam;
deletion/insertion curves of 10 steps), interleaved rounds of: the local engine (1 torch thread),
Ray with 1 worker, Ray with 2 workers (1 CPU and 1 torch thread each, Ray started locally by the
audit): the wall clock of the whole run (Ray start and actor start included) and the rate in the
workers, from the shards' own start and end times (start-up left out). Then the
per-image cost against the one-image-at-a-time alternative: one ``python -m attention export`` process
per image (with the same three methods), and one export process for all the images. Last, ViT-B/16
(random init, 224 px, no deletion curves) on a few images, for scale. Prints markdown tables.

``--pass-ratio``: only the shared-pass table (ViT-B/16, batch 8, one thread): the audit end to end per
image against one forward + one backward to the input with the parameters frozen (`shared_pass_ratio`).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

METHODS = ["rollout", "grad_rollout", "gradcam"]


def _load() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def one_audit(data: str, engine: str, workers: int, shard: int, steps: int, model: str = "demo-vit",
              random_init: bool = False) -> dict:
    """Whole-run wall clock, and the span from the first shard's start to the last shard's end in the
    workers (start-up of Ray, the actors and the model left out)."""
    from attention.audit import run_audit
    from attention.audit.shards import iter_shards
    out = tempfile.mkdtemp(prefix="bench_audit_")
    t0 = time.perf_counter()
    outcome = run_audit(data, out, model, methods=METHODS, engine=engine, workers=workers, shard_size=shard,
                        faithfulness_steps=steps, random_init=random_init, quiet=True, html=False, log=lambda s: None)
    wall = time.perf_counter() - t0
    shards = list(iter_shards(out, outcome.report["run"]["shards"]))
    span = max(float(z["time_end"]) for z in shards) - min(float(z["time_start"]) for z in shards)
    n = outcome.report["images"]["computed"]
    return {"wall": wall, "images": n, "per_s": n / wall, "pool_per_s": n / span, "fixed": wall - span}


def export_per_image(data_dir: str, k: int) -> tuple[float, float]:
    """(seconds per image with one export process per image, seconds per image with one process for all k)."""
    imgs = sorted(os.listdir(os.path.join(data_dir, "images")))[:k]
    paths = [os.path.join(data_dir, "images", f) for f in imgs]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    base = [sys.executable, "-m", "attention", "export", "--model", "demo-vit", "--methods", ",".join(METHODS), "--quiet"]
    out = tempfile.mkdtemp(prefix="bench_export_")
    t0 = time.perf_counter()
    for p in paths:
        subprocess.run(base + ["--out", out, p], check=True, env=env, cwd=ROOT, capture_output=True)
    each = (time.perf_counter() - t0) / k
    t0 = time.perf_counter()
    subprocess.run(base + ["--out", out] + paths, check=True, env=env, cwd=ROOT, capture_output=True)
    together = (time.perf_counter() - t0) / k
    return each, together


def forward_backward(model, x: torch.Tensor) -> tuple[float, float]:
    """(wall, CPU) seconds for one forward and one backward of each item's top class to the input,
    parameters frozen (the floor of any gradient map: what one shared pass must at least cost)."""
    from attention.modelstate import preserved
    t0, c0 = time.perf_counter(), time.process_time()
    with preserved(model, eval_mode=True, freeze=True), torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        logits = model(xg)
        y = logits.gather(1, logits.detach().argmax(-1)[:, None]).sum()
        torch.autograd.grad(y, xg)
    return time.perf_counter() - t0, time.process_time() - c0


def per_method_maps(model, x: torch.Tensor) -> tuple[float, float]:
    """(wall, CPU) seconds for the same three maps the way they were computed before the shared pass: a
    plain capture (rollout), grad-rollout's own capture with its graph and its backward (parameters
    live), and pytorch-grad-cam's own forward and backward (the maps only, no audit around them)."""
    from attention.capture import capture
    from attention.methods import compute_map
    from attention.methods.grad_rollout import grad_rollout
    from attention.methods.gradcam import gradcam
    t0, c0 = time.perf_counter(), time.process_time()
    r = capture(model, x)
    compute_map("rollout", r)
    top = r.logits.argmax(-1)
    grad_rollout(model, x, top)
    gradcam(model, x, top)
    return time.perf_counter() - t0, time.process_time() - c0


def _audit_times(data: str, model: str, batch: int) -> tuple[float, float]:
    from attention.audit import run_audit
    out = tempfile.mkdtemp(prefix="bench_pass_out_")
    t0, c0 = time.perf_counter(), time.process_time()
    run_audit(data, out, model, methods=METHODS, random_init=True, batch_size=batch, shard_size=3 * batch,
              faithfulness_steps=0, quiet=True, log=lambda s: None)
    return time.perf_counter() - t0, time.process_time() - c0


def shared_pass_ratio(rounds: int = 3, batch: int = 8, model: str = "vit_base_patch16_224") -> None:
    """The audit end to end per image against one forward + one backward to the input, in one process at
    one thread, interleaved: the audit's per-image cost is the slope between ``batch`` and ``3 · batch``
    images (model load, report and start-up cancel), the reference a batch of ``batch``. Wall clock and
    this process's CPU time (one thread: the CPU time is what the work costs, whatever else runs on the
    machine; the wall clock also holds the waits for a core)."""
    from attention.demo.shapes import write_dataset
    from attention.models import load_model
    torch.set_num_threads(1)
    dirs = {}
    for n in (batch, 3 * batch):
        d = tempfile.mkdtemp(prefix="bench_pass_")
        write_dataset(n, 8, d, size=224)
        dirs[n] = os.path.join(d, "images")
    lm = load_model(model, pretrained=False)
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    forward_backward(lm.model, x[:1])       # warm-up
    refs, audits, before = [], [], []
    load0 = _load()
    for _ in range(rounds):
        w, c = forward_backward(lm.model, x)
        refs.append((w / batch, c / batch))
        small, large = _audit_times(dirs[batch], model, batch), _audit_times(dirs[3 * batch], model, batch)
        audits.append(((large[0] - small[0]) / (2 * batch), (large[1] - small[1]) / (2 * batch)))
        w, c = forward_backward(lm.model, x)
        refs.append((w / batch, c / batch))
        w, c = per_method_maps(lm.model, x)
        before.append((w / batch, c / batch))
    print(f"## One pass for many maps (`python -m benchmarks.audit --pass-ratio`, {time.strftime('%Y-%m-%d')})\n")
    print(f"{model} (random init, 224×224), batch {batch}, 1 torch thread, one process, {rounds} interleaved "
          f"round(s), median (min–max). *Audit*: `run_audit` end to end with {', '.join(METHODS)}, no "
          f"deletion curves, per image = (time for {3 * batch} images − time for {batch}) ÷ {2 * batch}. "
          f"*Floor*: one forward + one backward of each item's top class to the input, parameters frozen, "
          f"per image. *Per-method path*: the maps alone as they were computed before the shared pass (a capture, "
          f"grad-rollout's own forward + backward with the parameters live, pytorch-grad-cam's own forward + "
          f"backward). Load average before: [{load0}], after: [{_load()}] (2 cores shared with other jobs: "
          f"the CPU-time column is the robust one).\n")
    print("| | wall ms per image | CPU ms per image | × floor (wall) | × floor (CPU) |")
    print("|---|---|---|---|---|")

    def cell(v, k):
        xs = [1000 * r[k] for r in v]
        return f"{statistics.median(xs):.0f} ({min(xs):.0f}–{max(xs):.0f})"
    rw, rc = statistics.median(r[0] for r in refs), statistics.median(r[1] for r in refs)
    aw, ac = statistics.median(r[0] for r in audits), statistics.median(r[1] for r in audits)
    print(f"| forward + backward to the input (floor) | {cell(refs, 0)} | {cell(refs, 1)} | 1.00 | 1.00 |")
    bw, bc = statistics.median(r[0] for r in before), statistics.median(r[1] for r in before)
    print(f"| per-method path, maps only (before) | {cell(before, 0)} | {cell(before, 1)} | {bw / rw:.2f} | "
          f"{bc / rc:.2f} |")
    print(f"| audit, one shared pass | {cell(audits, 0)} | {cell(audits, 1)} | **{aw / rw:.2f}** | **{ac / rc:.2f}** |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=160)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--shard-size", type=int, default=40)
    p.add_argument("--steps", type=int, default=10, help="deletion/insertion steps")
    p.add_argument("--export-images", type=int, default=8)
    p.add_argument("--vitb-images", type=int, default=8)
    p.add_argument("--engines", default="local,ray:1,ray:2", help="configurations to time, e.g. local,ray:2")
    p.add_argument("--quick", action="store_true", help="80 images, 1 round, no ViT-B")
    p.add_argument("--pass-ratio", action="store_true",
                   help="only the ViT-B/16 table: the audit per image ÷ one forward + backward (shared_pass_ratio)")
    a = p.parse_args(argv)
    if a.pass_ratio:
        shared_pass_ratio(max(1, a.rounds))
        return 0
    if a.quick:
        a.images, a.rounds, a.vitb_images, a.shard_size = 80, 1, 0, 20
    torch.set_num_threads(1)
    from attention.demo.shapes import write_dataset
    data = tempfile.mkdtemp(prefix="bench_shapes_")
    write_dataset(a.images, 7, data)
    load0 = _load()
    configs = [(c.split(":")[0], int(c.split(":")[1]) if ":" in c else 1) for c in a.engines.split(",") if c]
    runs: dict = {c: [] for c in configs}
    for _ in range(a.rounds):
        for engine, w in configs:           # interleaved: each round runs every configuration once
            runs[(engine, w)].append(one_audit(data, engine, w, a.shard_size, a.steps))
    print(f"## Dataset audit (`python -m benchmarks.audit`, {time.strftime('%Y-%m-%d')})\n")
    print(f"demo-vit on {a.images} shapes images (64×64, masks), methods {', '.join(METHODS)}, deletion/insertion "
          f"{a.steps} steps, shards of {a.shard_size}; 1 torch thread per process (Ray: 1 CPU per worker); "
          f"{a.rounds} interleaved round(s), median (min–max). *In the workers*: images ÷ (last shard's end − first "
          f"shard's start), i.e. without the start-up; *start-up* = whole run − that span (model load, Ray and actor "
          f"start, report). Load average before: [{load0}], after: [{_load()}] (2 cores shared with other jobs).\n")
    print("| engine | workers | wall s (whole run) | images/s (whole run) | images/s (in the workers) | start-up s |")
    print("|---|---|---|---|---|---|")
    for (engine, w), rs in runs.items():
        def med(k, d=2):
            v = [r[k] for r in rs]
            return f"{statistics.median(v):.{d}f} ({min(v):.{d}f}–{max(v):.{d}f})"
        print(f"| {engine} | {w} | {med('wall', 1)} | {med('per_s')} | {med('pool_per_s')} | {med('fixed', 1)} |")
    if ("local", 1) not in runs:
        return 0
    local_per_img = 1 / statistics.median(r["pool_per_s"] for r in runs[("local", 1)])
    each, together = export_per_image(data, a.export_images)
    print(f"\nPer image: the audit (local, everything above: maps, head statistics, border mass, pointing/AUROC, "
          f"{2 * (a.steps + 1)} perturbed forwards per method) **{1000 * local_per_img:.0f} ms** (in the worker); one "
          f"`python -m attention export --methods {','.join(METHODS)}` process per image **{1000 * each:.0f} ms** "
          f"({each / local_per_img:.1f}× the audit's cost, mostly interpreter and model start-up); one export process "
          f"for {a.export_images} images {1000 * together:.0f} ms per image (maps only, no dataset numbers).")
    if a.vitb_images:
        from attention.demo.shapes import write_dataset as wd
        d2 = tempfile.mkdtemp(prefix="bench_vitb_")
        wd(a.vitb_images, 8, d2, size=224)
        # a plain folder (no labels: the shapes' class names are not ImageNet classes, no masks)
        r = one_audit(os.path.join(d2, "images"), "local", 1, a.vitb_images, 0, model="vit_base_patch16_224",
                      random_init=True)
        per, inner = r["wall"] / r["images"], 1 / r["pool_per_s"]
        print(f"\nViT-B/16 (random init, 224×224, same methods, no deletion curves), local, {r['images']} images: "
              f"{inner:.2f} s per image in the worker ({per:.2f} s with the model load and report) → 50 000 images ≈ "
              f"{50000 * inner / 3600:.0f} h on one core of this machine; Ray divides that by the number of workers.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
