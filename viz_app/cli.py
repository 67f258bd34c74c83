"""``python app.py [--model NAME] [--checkpoint PATH] [--labels PATH] [--host H] [--port P] [--share]
[--auth-file FILE] [--allow-model-dir DIR]``.

Everything that can be wrong with the start (a busy port, a bad login file, an allowed folder that does not
exist) is said in one line, exit code 2, before any model loads.
"""
from __future__ import annotations

import argparse
import functools
import ipaddress
import logging
import os
import socket
import sys
from typing import Optional

from attention.errors import UserError

from .words import Text
from .models import FALLBACK, HOW_TO_GET_IMAGENET, ModelManager, ModelSpec, choose_default

log = logging.getLogger("viz_app")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="attention-viz (or python app.py)",
                                description="Browser app: see what a vision model attends to.")
    from attention.models import name_syntax
    p.add_argument("--model", help="model to start with (default: deit_small_patch16_224 when the hub is reachable, "
                                    "else demo-vit); one of: " + name_syntax(sep="; "))
    p.add_argument("--checkpoint", help="your weights (.safetensors, .pth, .pt, .bin, .ckpt, timm's .pth.tar); "
                   "without --model the architecture comes from the file or its weight shapes")
    p.add_argument("--labels", help="class names for --checkpoint: text, one per line, or a JSON list")
    p.add_argument("--live-weights", action="store_true", help="a checkpoint with EMA weights: load the live "
                   "weights (the EMA weights are the default, as in timm)")
    p.add_argument("--img-size", type=int, help="build a timm ViT at this input size (position embedding resampled)")
    p.add_argument("--classes", help="zero-shot models (open_clip:ARCH/PRETRAINED): the classes, e.g. "
                                     "\"cat, dog, teapot\"")
    p.add_argument("--lang", default=None, help="the page's language when the browser asks for none we have: en "
                   "(default) or zh-CN (简体中文); a tab can also open with ?lang=zh-CN and switch in the page")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    p.add_argument("--device", default="cpu", help="where models run: cpu (default), auto (CUDA, else MPS, else CPU), "
                                                 "cuda, cuda:N or mps; pictures are drawn on the CPU")
    p.add_argument("--max-models", type=int, default=2, help="models kept in memory at once (default 2)")
    p.add_argument("--cache-mb", type=int, default=1500, help="memory for cached attention maps (default 1500 MB)")
    p.add_argument("--random-init", action="store_true", help="random weights instead of pretrained (no download; "
                                                              "for trying the app's mechanics)")
    p.add_argument("--auth-file", metavar="FILE", help="require a login: FILE has user:password lines (or set "
                   f"{AUTH_ENV}=user:password[,user2:password2]); passwords stay out of the shell history")
    p.add_argument("--allow-model-dir", action="append", default=[], metavar="DIR",
                   help="let users load models by a path on this machine, inside DIR only (repeatable). Without it, "
                        "paths load only when the app listens on this machine alone (127.0.0.1, no --share)")
    return p


AUTH_ENV = "ATTENTION_VIZ_AUTH"
#: how long a request waits for a model's load before it hears "still loading" (its worker is then free for
#: other users; the load goes on in the background, a download within the hub's deadline)
LOAD_WAIT_S = 20.0
#: how long the start waits for the default model when it must be downloaded (then: demo-vit, and the
#: default model joins the menu when its download is done)
START_WAIT_S = 8.0


class StartError(Exception):
    """A start that cannot go on: one line, exit code 2."""


def is_loopback(host: str) -> bool:
    if host.strip("[]") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_model_dirs(args) -> Optional[list[str]]:
    """Where users may load models by path: None = anywhere (this machine only), [] = nowhere, else these."""
    dirs = []
    for d in getattr(args, "allow_model_dir", None) or []:
        full = os.path.realpath(os.path.expanduser(d))
        if not os.path.isdir(full):
            raise StartError(f"--allow-model-dir {d}: no such folder")
        dirs.append(full)
    if dirs:
        return dirs
    return None if is_loopback(args.host) and not args.share else []


def parse_auth(text: str, where: str) -> list[tuple[str, str]]:
    """``user:password`` entries, one a line (or comma-separated); blank lines and ``#`` comments skipped."""
    pairs = []
    for k, line in enumerate(text.replace(",", "\n").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user.strip() or not password:
            raise StartError(f"{where}, entry {k}: expected user:password (no password shown here)")
        pairs.append((user.strip(), password))
    if not pairs:
        raise StartError(f"{where}: no user:password entry")
    return pairs


def read_auth(args) -> Optional[list[tuple[str, str]]]:
    """The logins of `--auth-file`, else of the environment variable, else None (no login)."""
    if getattr(args, "auth_file", None):
        try:
            with open(args.auth_file, encoding="utf-8") as f:
                text = f.read(1 << 20)
        except OSError as e:
            raise StartError(f"--auth-file {args.auth_file}: {e.strerror or e}") from None
        return parse_auth(text, f"--auth-file {args.auth_file}")
    if os.environ.get(AUTH_ENV, "").strip():
        return parse_auth(os.environ[AUTH_ENV], AUTH_ENV)
    return None


def check_port(host: str, port: int) -> None:
    """Fail now, in one line, when the port is taken (Gradio would fail after the model loaded, with advice
    about its own settings instead of --port)."""
    if not 0 < port < 65536:
        raise StartError(f"--port {port}: a port is 1..65535")
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise StartError(f"--host {host}: not an address of this machine ({e.strerror})") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind(addr)
        except OSError as e:
            raise StartError(f"port {port} on {host} is not available ({e.strerror}): another server (a second "
                             f"copy of this app?) uses it; choose another with --port N") from None


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
    if args.checkpoint and not args.model:
        from attention.models import checkpoint_architecture      # named by the file, or fitted to its shapes
        args.model, how = checkpoint_architecture(args.checkpoint, False if getattr(args, "live_weights", False) else None)
        print(f"{args.model}: {how}", file=sys.stderr)
    if args.model and (args.checkpoint or args.labels or img_size):
        parts = [os.path.basename(args.checkpoint or args.labels or "")] if (args.checkpoint or args.labels) else []
        parts += [f"{img_size} px"] if img_size else []
        name = f"{args.model} · {' · '.join(parts)}"
        manager.add_spec(ModelSpec(name, args.model, args.checkpoint, args.labels, img_size=img_size,
                                   ema=False if getattr(args, "live_weights", False) else None))
        manager.get(name, wait=None)            # a bad checkpoint ends the start with its message
        return (manager.with_classes(name, classes) if classes else name), ""
    if args.model:
        manager.add_spec(ModelSpec(args.model, args.model))   # the operator's choice: any path may be given here
        manager.get(args.model, wait=None)
        return (manager.with_classes(args.model, classes) if classes else args.model), ""
    name, notice = choose_default()
    try:
        manager.get(name, wait=START_WAIT_S)   # a download that takes longer goes on in the background
    except UserError as e:
        if name == FALLBACK:
            return name, notice or str(e)
        # the reason only: the ways out are said once, by HOW_TO_GET_IMAGENET
        why = getattr(e, "why", None) or str(e)
        notice = Text("app.notice.could_not_load", model=name, why=why.rstrip('.'), how=HOW_TO_GET_IMAGENET)
        name = FALLBACK
        try:
            manager.get(name)
        except UserError as e2:
            notice = Text("app.notice.demo_failed_too", notice=notice, error=str(e2))
    return name, notice


def main(argv: Optional[list[str]] = None, demo=None) -> int:
    args = build_parser().parse_args(argv)
    try:                     # everything about the start that can be wrong, before a model loads
        check_port(args.host, args.port)
        auth = read_auth(args)
        allowed = allowed_model_dirs(args)
        from attention.device import resolve_device
        device = resolve_device(args.device)
        from .words import set_build_language
        set_build_language(args.lang)
    except (StartError, UserError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
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
    cb.manager.allowed_dirs = allowed
    cb.manager.load_wait_s = LOAD_WAIT_S
    if device.type != "cpu":     # every model the manager loads goes to the device (load_model's device=)
        cb.manager._load_model = functools.partial(cb.manager._load_model, device=device)
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
    if auth:
        print(f"Login required: {len(auth)} user(s)", flush=True)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, css=CSS, js=JS, show_error=True,
                max_file_size=upload_limit_bytes(), auth=auth,
                quiet=False, footer_links=["api", "gradio"])
    return 0
