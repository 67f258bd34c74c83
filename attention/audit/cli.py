"""The ``audit`` subcommand of ``python -m attention``."""
from __future__ import annotations

import argparse


def add_audit_parser(subparsers) -> argparse.ArgumentParser:
    a = subparsers.add_parser(
        "audit", help="attention over a whole dataset: report.json, report.html and per-image shards",
        description="Audit where a model looks across a dataset. Exit code 0: every image audited; 1: some images "
                    "were skipped (named on stderr and in report.json); 2: a usage error.")
    from ..models import name_syntax
    a.add_argument("--model", help="the model (without it: the architecture --checkpoint names or fits): "
                   + name_syntax(sep="; "))
    a.add_argument("--checkpoint", help="your weights (.safetensors, .pth, .pt, .bin, .ckpt, timm's .pth.tar)")
    a.add_argument("--live-weights", action="store_true", help="load a checkpoint's live weights, not its EMA weights")
    a.add_argument("--group-by-folder", action="store_true", help="read class folders / CSV labels as groups, not as "
                   "the model's classes (automatic for a model without classifier): per-group maps, no accuracy")
    a.add_argument("--labels", help="class names: text (one per line) or a JSON list")
    a.add_argument("--random-init", action="store_true", help="random weights instead of pretrained (no download)")
    a.add_argument("--data", required=True, help="a folder of images (class sub-folders give labels), a CSV of "
                                                "path,label[,mask], or a folder with images/, masks/, labels.csv")
    a.add_argument("--masks", help="folder of object masks (same relative path or file name as the image)")
    a.add_argument("--out", required=True, help="output folder; re-running with the same folder resumes")
    a.add_argument("--methods", default="", help="comma-separated maps (default: rollout,grad_rollout,gradcam where defined)")
    from .engines import ENGINE_REGISTRY
    a.add_argument("--engine", default="local", choices=ENGINE_REGISTRY.names(),
                   help=", ".join(f"{e.name} ({e.help})" for e in ENGINE_REGISTRY))
    a.add_argument("--workers", type=int, default=1, help="Ray: number of model actors (one per worker)")
    a.add_argument("--cpus-per-worker", type=int, default=1, help="Ray: CPUs (and torch threads) per model actor")
    a.add_argument("--ray-address", help="Ray: address of a running cluster (default: start Ray on this machine)")
    a.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    a.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps")
    a.add_argument("--gpus-per-worker", type=float, default=0.0,
                   help="Ray: GPUs per model actor, fractions allowed (0.25: four actors share a GPU)")
    a.add_argument("--loader-workers", type=int, default=None,
                   help="processes decoding images while the model computes (default: 0 on the CPU, else up to 4)")
    a.add_argument("--shard-size", type=int, default=64, help="images per shard (the unit of work and of resuming)")
    a.add_argument("--faithfulness-steps", type=int, default=10,
                   help="steps of the deletion/insertion curves (0: skip them; they cost 2 x (steps + 1) forwards per map)")
    a.add_argument("--fresh", action="store_true", help="discard what --out holds instead of resuming")
    a.add_argument("--no-html", action="store_true", help="skip report.html")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    a.set_defaults(handler=audit_command)
    return a


def audit_command(args) -> int:
    from .run import run_audit
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] or None
    outcome = run_audit(args.data, args.out, args.model, masks=args.masks, methods=methods, checkpoint=args.checkpoint,
                        labels=args.labels, random_init=args.random_init, engine=args.engine, workers=args.workers,
                        ray_address=args.ray_address, cpus_per_worker=args.cpus_per_worker,
                        batch_size=args.batch_size, shard_size=args.shard_size, device=args.device,
                        gpus_per_worker=args.gpus_per_worker, loader_workers=args.loader_workers,
                        faithfulness_steps=args.faithfulness_steps, fresh=args.fresh, html=not args.no_html,
                        quiet=args.quiet, group_by_folder=args.group_by_folder,
                        ema=False if args.live_weights else None)
    return outcome.exit_code


__all__ = ["add_audit_parser", "audit_command"]
