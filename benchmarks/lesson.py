"""How long the Learn tab's steps take on the CPU: ``python -m benchmarks.lesson [--quick] [--threads N]``.

For each model (the bundled demo-vit; random-init ViT-B/16 at 224 as the largest the app offers by
default), through the page's own handlers (`Events.call` on each step of `viz_app.learn.steps`) on one analysed
photo: the first
query step of a layer (one extra forward that recomputes q, k, v, plus four pictures), a change of
query in the same layer (pictures only), a temperature change (two pictures), the heads, layers,
special-token and token steps. Then the training speed of "watch it learn" (steps per second of the
default recipe, measured over a short run). Prints a markdown table; medians over repeats.
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from benchmarks.sections import photo  # noqa: E402
from benchmarks.timing import load, measure, once  # noqa: E402


def lesson_rows(model_name: str, repeat: int) -> list[tuple[str, dict]]:
    import tempfile

    from viz_app import inputs
    from viz_app.callbacks import Callbacks
    from viz_app.learn import opener
    from viz_app.learn.steps import step_named
    from viz_app.learn.steps.query import on_temperature
    from viz_app.learn.step import self_attention
    from viz_app.models import ModelManager
    from viz_app.page import Page
    from viz_app.ui import build_demo
    app = build_demo(Callbacks(ModelManager(pretrained=False)), default_model=model_name)
    ev = app.viz_events
    path = os.path.join(tempfile.mkdtemp(prefix="bench_lesson_"), "photo.png")
    photo(480, 640).save(path)
    page = ev.call(inputs.on_image, Page(model_name, tab="learn"), "bench", image_in=path)["page"]
    a = app.viz_callbacks.analysis_of("bench", page.model, page.sha, page.image)
    layers = len(self_attention(a))
    state = {"layer": 0}

    def run(step_id: str, p):
        ev.call(opener(step_named(step_id)), p, "bench")

    def first_query_of_a_layer():          # a new layer: q, k, v recomputed (one forward), four pictures
        state["layer"] = (state["layer"] + 1) % layers
        a.derived.pop(("lesson", "projections", state["layer"]), None)
        run("query", page.with_lesson(layer=state["layer"], head=0, row=2, col=3))

    # every call asks for a patch / temperature not drawn before: the pictures are cached per
    # (layer, head, query, temperature), and a repeat of the same one would time the cache
    gh, gw = self_attention(a)[0].layout.grid
    cells = iter([(r, c) for r in range(gh) for c in range(gw)] * 4)
    temps = iter([0.3 + 0.01 * i for i in range(10_000)])

    def other_patch():
        r, c = next(cells)
        run("query", page.with_lesson(layer=0, head=1, row=r, col=c))

    def other_temperature():
        ev.call(on_temperature, page.with_lesson(layer=0), "bench", learn_temperature=next(temps))

    rows = [
        ("query step, new layer (forward + 4 pictures)", measure(first_query_of_a_layer, repeat, 1)),
        ("query step, other patch (4 pictures)", measure(other_patch, repeat, 1)),
        ("temperature change (2 pictures)", measure(other_temperature, repeat, 1)),
        ("heads (all heads + distance vs depth)",
         measure(lambda: run("heads", page.with_lesson(row=2, col=3)), repeat, 1)),
        ("layers: raw vs rollout (cached maps)", measure(lambda: run("layers", page), repeat, 1)),
        ("special tokens (prefix attention + norms)", measure(lambda: run("special", page), repeat, 1)),
        ("tokens (patches + position similarity)", measure(lambda: run("tokens", page), repeat, 1)),
    ]
    return rows


def training_speed(steps: int) -> dict:
    from attention.lesson.learning import LESSON_RECIPE, TrainingRun
    run = TrainingRun(steps=steps, snapshot_every=25)
    t = once(lambda: run.start().wait())
    st = run.state()
    per_step = t / max(st.step, 1)
    return {"steps": st.step, "seconds": round(t, 2), "s_per_step": round(per_step, 3),
            "default_run_estimate_s": round(per_step * LESSON_RECIPE["steps"], 1),
            "default_steps": LESSON_RECIPE["steps"], "batch_size": LESSON_RECIPE["batch_size"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="demo-vit only, 2 repeats, 20 training steps")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the app uses cores // 2)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = ["demo-vit"] if args.quick else ["demo-vit", "vit_base_patch16_224"]
    repeat = 2 if args.quick else 5
    print(f"threads {args.threads} · load {load()} · torch {torch.__version__}\n")
    print("| model | step | median ms | min | max |\n|---|---|---|---|---|")
    for name in models:
        for label, s in lesson_rows(name, repeat):
            print(f"| {name} | {label} | {s['median_ms']:.0f} | {s['min_ms']:.0f} | {s['max_ms']:.0f} |")
    tr = training_speed(20 if args.quick else 100)
    print(f"\nwatch it learn: {tr['steps']} steps in {tr['seconds']} s ({tr['s_per_step']} s/step at batch "
          f"{tr['batch_size']}, snapshots included) -> default run of {tr['default_steps']} steps "
          f"≈ {tr['default_run_estimate_s']} s · load {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
