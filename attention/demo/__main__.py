"""CLI for the shapes demo.

  python -m attention.demo dataset --n 100 --seed 0 --out DIR [--size 64]
  python -m attention.demo train --arch demo-vit [--steps N --seed S --batch-size B --out assets --threads 2]
  python -m attention.demo evaluate [--models demo-vit ...] [--n 1000 --seed 999 --assets assets]
  python -m attention.demo samples [--out assets/shapes_samples.png --seed 3 --n 12]
"""
from __future__ import annotations

import argparse
import json
import sys


def _cmd_dataset(a) -> int:
    from .shapes import write_dataset
    info = write_dataset(a.n, a.seed, a.out, a.size)
    print(json.dumps(info))
    return 0


def _cmd_train(a) -> int:
    from .train import train_and_save
    archs = a.arch
    for arch in archs:
        train_and_save(arch, out_dir=a.out, name=a.name if len(archs) == 1 else None, steps=a.steps, seed=a.seed,
                       batch_size=a.batch_size, num_threads=a.threads)
    return 0


def _cmd_evaluate(a) -> int:
    """Markdown table model x map -> accuracy, pointing game, AUROC, deletion / insertion AUC, computed through the same path
    as the app and the CLI (load by name, the model's preprocessing, capture, registered methods)."""
    import torch
    from .evaluate import DEFAULT_MAPS, evaluate, markdown
    if a.threads:
        torch.set_num_threads(a.threads)
    rows = evaluate(a.models, n=a.n, seed=a.seed, maps=a.maps or DEFAULT_MAPS,
                    progress=lambda m: print(m, file=sys.stderr), faith_n=a.faith_n, steps=a.steps,
                    folder=a.folder)
    print(markdown(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


def _cmd_samples(a) -> int:
    from .shapes import make_dataset, sample_grid
    images, masks, labels = make_dataset(a.n, a.seed)
    sample_grid(images, labels, a.out, cols=a.cols, masks=masks if a.masks else None)
    print(f"wrote {a.out}")
    return 0


def main(argv=None) -> int:
    from .models import DEMO_ARCHS
    from .train import ASSETS_DIR
    p = argparse.ArgumentParser(prog="python -m attention.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("dataset", help="write a shapes dataset: images/, masks/, labels.csv")
    d.add_argument("--n", type=int, required=True)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", required=True)
    d.add_argument("--size", type=int, default=64)
    d.set_defaults(func=_cmd_dataset)

    t = sub.add_parser("train", help="train a demo model and write <name>.safetensors + <name>.json")
    t.add_argument("--arch", nargs="+", required=True, choices=DEMO_ARCHS)
    t.add_argument("--steps", type=int, default=None, help="default: the arch's recipe")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--out", default=ASSETS_DIR)
    t.add_argument("--name", default=None, help="output name (default: the arch)")
    t.add_argument("--threads", type=int, default=2)
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("evaluate", help="accuracy / pointing game / AUROC of the shipped demo models")
    e.add_argument("--models", nargs="+", default=list(DEMO_ARCHS))
    e.add_argument("--n", type=int, default=1000)
    e.add_argument("--seed", type=int, default=999)
    e.add_argument("--maps", nargs="+", default=None,
                   help="heatmap and any registered method (default: all, those undefined for a model are skipped)")
    e.add_argument("--faith-n", type=int, default=200,
                   help="images scored for deletion / insertion AUC (first N; 0: none)")
    e.add_argument("--steps", type=int, default=16, help="deletion / insertion steps")
    e.add_argument("--folder", default=None,
                   help="evaluate on a folder with images/, masks/ (same names) and optional labels.csv instead")
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--json", default=None, help="also write the results as JSON")
    e.set_defaults(func=_cmd_evaluate)

    s = sub.add_parser("samples", help="save a labelled grid of samples (README figure)")
    s.add_argument("--out", default=f"{ASSETS_DIR}/shapes_samples.png")
    s.add_argument("--n", type=int, default=12)
    s.add_argument("--seed", type=int, default=3)
    s.add_argument("--cols", type=int, default=6)
    s.add_argument("--masks", action="store_true", help="show each mask under its image")
    s.set_defaults(func=_cmd_samples)

    a = p.parse_args(argv)
    return a.func(a)


if __name__ == "__main__":
    sys.exit(main())
