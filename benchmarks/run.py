"""Speed and memory benchmark: ``python benchmarks/run.py [--quick] [--out results.json] [--markdown RESULTS.md]``.

Everything offline on the CPU: random-init timm models (ViT-B/16, DeiT-S, ViT-Ti at 224) and the
bundled demo models. Each measurement warms up first, then repeats; medians with min and max are
reported, and every comparison runs its sides interleaved (see `benchmarks/timing.py`). Prints a
markdown table, writes the JSON (``--out``) and the markdown (``--markdown``).

Sections: capture_overhead, rollout, gradient, rendering (incl. the app's callbacks), browser
(Chromium + Playwright; skipped in --quick or when chromium / app.py / assets/demo-vit.* is
absent), memory, scaling, peers (timm AttentionExtract, fast-vit-rollout, daam-timm-vit,
pytorch-grad-cam; install the PyPI ones with ``pip install --no-deps -r benchmarks/requirements.txt``).
``--quick`` is a smoke run of about a minute on the small models.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SECTIONS = ("thread_check", "capture_overhead", "rollout", "gradient", "rendering", "browser", "memory", "scaling", "peers")

# (quick, full) settings
PLAN = {
    "capture_models": (["vit_tiny_patch16_224"], ["vit_base_patch16_224", "deit_small_patch16_224",
                                                  "vit_tiny_patch16_224"]),
    "capture_rounds": (2, 15),
    "demo_rounds": (2, 20),
    "rollout_model": ("vit_tiny_patch16_224", "vit_base_patch16_224"),
    "rollout_repeat": (5, 40),
    "rollout_one_thread": (False, True),
    "gradient_model": ("vit_tiny_patch16_224", "vit_base_patch16_224"),
    "gradient_rounds": (2, 8),
    "render_model": ("vit_tiny_patch16_224", "vit_base_patch16_224"),
    "render_repeat": (3, 30),
    "app_rounds": (2, 24),
    "uploads": (0, 4),
    "slider_changes": (0, 12),
    "memory_model": ("vit_tiny_patch16_224", "vit_base_patch16_224"),
    "photo_sizes": ([(640, 480)], [(224, 224), (640, 480), (4032, 3024)]),
    "export_model": ("vit_tiny_patch16_224", "vit_base_patch16_224"),
    "export_counts": ([2], [1, 50]),
    "scaling_model": ("vit_tiny_patch16_224", "vit_base_patch16_224"),
    "scaling_sizes": ([224, 384], [224, 384, 512]),
    "scaling_rounds": (1, 3),
    "scaling_rss": (False, True),
    "by_model": ([], ["vit_tiny_patch16_224", "deit_small_patch16_224", "vit_base_patch16_224"]),
    "by_model_rounds": (1, 5),
    "peers_model": ("vit_tiny_patch16_224", "vit_base_patch16_224"),
    "peers_rounds": (1, 8),
    "peers_rollout_rounds": (3, 40),
}

NOTES = [
    "Threads: on a shared, loaded machine two torch threads rarely get two cores at the same time; every "
    "OpenMP parallel region then waits at its join for the descheduled thread, so times at 2 threads inflate "
    "by 10-100x (see the thread check) while 1 thread stays stable. Use `--threads 1` there; the default is 2.",
    "Capture overhead is measured against the untouched timm model (fused attention on); the capture computes "
    "each fused SDPA call as its definition (the weights do not exist otherwise), so the ratio includes the "
    "attention written out, keeping every map, and the copy to float16. This script runs with glibc's default "
    "allocator; `python -m benchmarks.capture` also measures the app's setting (attention/allocator.py).",
    "Gradient-weighted attention is compared with the tightest plain baseline: forward + backward of the same "
    "logit to the input (no parameter gradients), and for reference with loss.backward() into every parameter.",
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="one-minute smoke run (small models, few repeats)")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results.json"), help="JSON output path")
    p.add_argument("--markdown", default=None, help="markdown output path (default: RESULTS.md next to --out; "
                                                    "'-' for none)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset of " + ", ".join(SECTIONS))
    p.add_argument("--no-browser", action="store_true", help="skip the Chromium section")
    p.add_argument("--from-json", metavar="RESULTS_JSON", help="only re-render the markdown of an earlier run")
    args = p.parse_args(argv)
    if args.from_json:
        from benchmarks import report
        with open(args.from_json, encoding="utf-8") as f:
            res = json.load(f)
        res["targets"] = report.targets(res)
        md = report.markdown(res)
        if args.markdown and args.markdown != "-":
            with open(args.markdown, "w", encoding="utf-8") as f:
                f.write(md + "\n")
        print(md)
        return 0

    import torch

    from benchmarks import report, sections as S
    from benchmarks.peers import peers
    from benchmarks.timing import load, machine

    torch.set_num_threads(args.threads)
    q = 0 if args.quick else 1
    P = {k: v[q] for k, v in PLAN.items()}
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")

    t_all = time.perf_counter()
    res: dict = {"machine": machine(), "config": {"quick": args.quick, "threads": args.threads, "sections": wanted,
                                                   "plan": P}, "notes": list(NOTES)}
    models = S.Models()

    def run(name, fn):
        if name not in wanted:
            return
        t0 = time.perf_counter()
        print(f"[bench] {name} ... (load {load()})", file=sys.stderr, flush=True)
        try:
            res[name] = fn()
        except Exception as e:  # noqa: BLE001 - one broken section must not hide the others
            res[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
        res[name + "_seconds"] = round(time.perf_counter() - t0, 1)
        print(f"[bench] {name} done in {res[name + '_seconds']} s", file=sys.stderr, flush=True)

    if not args.quick:
        run("thread_check", lambda: S.thread_check(models))
    run("capture_overhead", lambda: S.capture_overhead(models, P["capture_models"], P["capture_rounds"], True,
                                                       P["demo_rounds"]))
    run("rollout", lambda: S.rollout_times(models, P["rollout_model"], P["rollout_repeat"], P["rollout_one_thread"]))
    run("gradient", lambda: S.gradient(models, P["gradient_model"], P["gradient_rounds"]))
    run("rendering", lambda: S.rendering(models, P["render_model"], P["render_repeat"], P["app_rounds"]))
    if args.quick or args.no_browser:
        if "browser" in wanted:
            res["browser"] = {"skipped": "--quick" if args.quick else "--no-browser"}
    else:
        from benchmarks.browser import browser
        run("browser", lambda: browser(P["uploads"], P["slider_changes"]))
    run("memory", lambda: {"cached_per_image": S.cached_bytes(models, P["memory_model"], P["photo_sizes"]),
                           "export_rss": S.export_rss(P["export_model"], P["export_counts"], args.threads,
                                                         baseline=not args.quick)})
    run("scaling", lambda: S.scaling(models, P["scaling_model"], P["scaling_sizes"], P["scaling_rounds"],
                                     P["scaling_rss"], P["by_model"], P["by_model_rounds"]))
    run("peers", lambda: peers(models.timm(P["peers_model"]), P["peers_model"], P["peers_rounds"],
                               P["peers_rollout_rounds"]))

    res["load_at_end"] = load()
    cores = res["machine"]["usable_cores"] or 1
    busy = max(res["machine"]["load_at_start"][0], res["load_at_end"][0])
    if busy > cores - args.threads + 0.5:
        res["notes"].insert(0, f"WARNING: load average {busy} on {cores} cores while running with {args.threads} "
                               f"thread(s): other processes competed for the CPU, absolute times are inflated "
                               f"(ratios of interleaved runs are less affected).")
    res["total_s"] = round(time.perf_counter() - t_all, 1)
    try:
        res["targets"] = report.targets(res)
    except Exception as e:  # noqa: BLE001
        res["targets"] = []
        res["targets_error"] = f"{type(e).__name__}: {e}"
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(res, f, indent=1, default=str)
    md = report.markdown(res)
    md_path = args.markdown or os.path.join(os.path.dirname(os.path.abspath(args.out)), "RESULTS.md")
    if md_path != "-":
        with open(md_path, "w", encoding="utf-8") as f:
            f.write(md + "\n")
    print(md)
    print(f"[bench] wrote {args.out}" + ("" if md_path == "-" else f" and {md_path}"), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
