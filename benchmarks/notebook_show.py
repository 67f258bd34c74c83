"""Speed and size of ``show()`` in a notebook: ``python -m benchmarks.notebook_show [--rounds 5] [--threads N]``.

ViT-B/16 at 224 (timm, random init; the work does not depend on the weights) on one photo (scikit-image's
chelsea, 451 × 300): ``show(model, photo)`` (preprocessing, one captured forward, the default map, the
layer × head stack), then ``view._repr_html_()`` (the 12 × 13 grid cells and the map drawn and inlined as
PNG), and the size of that HTML. The first call (imports, first use of the model) is reported apart;
medians of the rounds after it. Prints a markdown table with the load average.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--model", default="vit_base_patch16_224")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import timm
    from skimage import data
    t0 = time.perf_counter()
    from attention import show
    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=False).eval()
    photo = data.chelsea()
    t1 = time.perf_counter()
    first = show(model, photo)
    first_html = first._repr_html_()
    t2 = time.perf_counter()
    shows, htmls, sizes = [], [], []
    for _ in range(args.rounds):
        a = time.perf_counter()
        view = show(model, photo)
        b = time.perf_counter()
        page = view._repr_html_()
        c = time.perf_counter()
        shows.append(b - a)
        htmls.append(c - b)
        sizes.append(len(page.encode("utf-8")))
    load = os.getloadavg()
    print(f"\n{args.model} at 224, {torch.get_num_threads()} torch thread(s), load average "
          f"{load[0]:.1f} / {load[1]:.1f} (1 / 5 min); imports + model build {t1 - t0:.1f} s\n")
    print("| what | median | min |")
    print("|---|---|---|")
    print(f"| first show() + HTML (first use) | {t2 - t1:.2f} s | |")
    print(f"| show() | {statistics.median(shows):.2f} s | {min(shows):.2f} s |")
    print(f"| _repr_html_() (draw + inline {len(first.grid)} × {first.grid[0].shape[0] + 1} cells and the map) | "
          f"{statistics.median(htmls):.2f} s | {min(htmls):.2f} s |")
    print(f"| show() + HTML | {statistics.median([s + h for s, h in zip(shows, htmls)]):.2f} s | |")
    print(f"| HTML size | {statistics.median(sizes) / 1e6:.2f} MB | |")
    assert len(first_html) > 0


if __name__ == "__main__":
    main()
