"""Load test of the served app's `/predict` API: K concurrent client sessions x R requests each.

    python -m benchmarks.load [--clients 16] [--requests 25] [--model demo-vit] [--rss-budget-mb 150]

Starts ``python app.py --model demo-vit --port FREE`` (HF_HUB_OFFLINE=1) itself, unless ``--url`` and
``--pid`` name a running server. Every client thread has its own `gradio_client.Client` (its own
session) and sends a mix of synthetic shapes images (known labels) and a few photos from
``skimage.data``. Checks, each counted per request:

- errors: any exception from the API;
- mismatches: ``meta["input_sha256"]`` differs from the sha256 of the image sent (uint8 H x W x 3 RGB
  pixels, row-major — the documented definition), the model in the answer is not the one asked for, the
  top-1 class differs from the expected one (shapes images: the true label, used only for images the
  model classifies correctly in-process; photos: the in-process prediction), or the answer says
  ``cached`` on a session's first request for an image (a result from another session = cross-talk);
- memory: the server's VmRSS (``/proc/PID/status``) after all requests may exceed the RSS after a
  warm-up round by at most ``--rss-budget-mb``.

Prints a table and exits non-zero on any error, mismatch or RSS over budget.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Probe:
    path: str
    sha256: str
    expected: Optional[str]      # expected top-1 label (None: not checked)
    kind: str                    # "shapes" or "photo"


def pixels_sha256(path: str) -> str:
    """sha256 of the decoded RGB pixels: uint8 H x W x 3, row-major bytes (as the app documents)."""
    rgb = np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8))
    return hashlib.sha256(rgb.tobytes()).hexdigest()


def make_probes(folder: str, model: str = "demo-vit", n_shapes: int = 10, n_photos: int = 2,
                seed: int = 4242) -> list[Probe]:
    """Write the test images to `folder`; expected labels come from an in-process run of `model`."""
    from attention.demo.shapes import CLASS_NAMES, make_dataset
    from attention.models import load_model

    loaded = load_model(model)          # the bundled weights (no download for demo-*)
    probes: list[Probe] = []
    images, _, labels = make_dataset(3 * n_shapes, seed)
    for k, (img, label) in enumerate(zip(images, labels)):
        if sum(p.kind == "shapes" for p in probes) >= n_shapes:
            break
        path = os.path.join(folder, f"shape_{k:03d}_{CLASS_NAMES[int(label)]}.png")
        Image.fromarray(img).save(path)
        predicted = loaded.top_k(loaded.capture(Image.open(path).convert("RGB")).logits, 1)[0][0]["label"]
        if predicted == CLASS_NAMES[int(label)]:          # only images the model gets right
            probes.append(Probe(path, pixels_sha256(path), CLASS_NAMES[int(label)], "shapes"))
    if not probes:
        raise RuntimeError(f"{model} classifies none of the shapes images correctly: is it trained?")
    try:
        import skimage.data as skd
        photos = [("chelsea", skd.chelsea), ("astronaut", skd.astronaut), ("coffee", skd.coffee)][:n_photos]
    except ImportError:
        photos = []
    for name, fn in photos:
        path = os.path.join(folder, f"photo_{name}.jpg")
        Image.fromarray(fn()).save(path, quality=90)
        predicted = loaded.top_k(loaded.capture(Image.open(path).convert("RGB")).logits, 1)[0][0]["label"]
        probes.append(Probe(path, pixels_sha256(path), predicted, "photo"))
    return probes


# ---------------------------------------------------------------------------------------------- server
def rss_mb(pid: int) -> float:
    """Resident set size of process `pid` in MB (VmRSS of /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for pid {pid}")


def serve(model: str = "demo-vit", timeout: float = 180.0, env: Optional[dict] = None):
    """``python app.py --model MODEL --port FREE`` with HF_HUB_OFFLINE=1; a context yielding (url, pid)."""
    from viz_app.testing import served_app_process
    return served_app_process("--model", model, timeout=timeout, env=env)


# ---------------------------------------------------------------------------------------------- load
@dataclass
class LoadReport:
    clients: int
    requests_per_client: int
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    rss_before_mb: Optional[float] = None
    rss_after_mb: Optional[float] = None
    rss_budget_mb: float = 150.0
    wall_s: float = 0.0

    @property
    def rss_growth_mb(self) -> Optional[float]:
        if self.rss_before_mb is None or self.rss_after_mb is None:
            return None
        return self.rss_after_mb - self.rss_before_mb

    @property
    def ok(self) -> bool:
        growth = self.rss_growth_mb
        return (not self.errors and not self.mismatches and self.requests == self.clients * self.requests_per_client
                and (growth is None or growth <= self.rss_budget_mb))

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if self.latencies else float("nan")

    def table(self) -> str:
        growth = self.rss_growth_mb
        rows = [
            ("clients x requests", f"{self.clients} x {self.requests_per_client}"),
            ("requests answered", str(self.requests)),
            ("errors", str(len(self.errors))),
            ("mismatches", str(len(self.mismatches))),
            ("latency p50 (s)", f"{self.percentile(50):.3f}"),
            ("latency p95 (s)", f"{self.percentile(95):.3f}"),
            ("latency max (s)", f"{max(self.latencies) if self.latencies else float('nan'):.3f}"),
            ("throughput (req/s)", f"{self.requests / self.wall_s:.2f}" if self.wall_s else "n/a"),
            ("server RSS after warm-up (MB)", f"{self.rss_before_mb:.1f}" if self.rss_before_mb else "n/a"),
            ("server RSS after load (MB)", f"{self.rss_after_mb:.1f}" if self.rss_after_mb else "n/a"),
            ("RSS growth (MB, budget)", f"{growth:+.1f} (<= {self.rss_budget_mb:.0f})" if growth is not None
             else "n/a"),
            ("result", "PASS" if self.ok else "FAIL"),
        ]
        width = max(len(r[0]) for r in rows)
        lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
        for title, items in (("errors", self.errors), ("mismatches", self.mismatches)):
            if items:
                lines.append(f"first {title}:")
                lines.extend(f"  {s}" for s in items[:10])
        return "\n".join(lines)


def _where(e: BaseException) -> str:
    """The innermost frames of an exception, short (which step of the request failed)."""
    frames = traceback.extract_tb(e.__traceback__)
    ours = [f for f in frames if "gradio_client" in f.filename or "benchmarks" in f.filename]
    frames = (ours or frames)[-3:]
    return " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in reversed(frames))


def _client(url: str):
    from gradio_client import Client
    return Client(url, verbose=False)


def check_answer(probe: Probe, answer, model: str) -> list[str]:
    """What is wrong with one /predict answer for `probe` (empty: nothing)."""
    labels, heatmap, meta = answer
    name = os.path.basename(probe.path)
    problems = []
    if meta.get("input_sha256") != probe.sha256:
        problems.append(f"{name}: input_sha256 {str(meta.get('input_sha256'))[:12]} != sent {probe.sha256[:12]}")
    if meta.get("model") != model:
        problems.append(f"{name}: model {meta.get('model')!r} != {model!r}")
    top = (meta.get("predictions") or [{}])[0].get("label")
    if probe.expected is not None and top != probe.expected:
        problems.append(f"{name}: top-1 {top!r} != expected {probe.expected!r}")
    if labels.get("label") != top:
        problems.append(f"{name}: label output {labels.get('label')!r} != meta top-1 {top!r}")
    if not heatmap or not os.path.exists(heatmap):
        problems.append(f"{name}: no heatmap file")
    return problems


def run_load(url: str, probes: list[Probe], clients: int = 16, requests: int = 25, model: str = "demo-vit",
             pid: Optional[int] = None, rss_budget_mb: float = 150.0, timeout_s: float = 1800.0,
             log=None) -> LoadReport:
    """K threads, each its own Client (session), R /predict requests each over a rotating mix of `probes`."""
    from gradio_client import handle_file

    report = LoadReport(clients, requests, rss_budget_mb=rss_budget_mb)
    lock = threading.Lock()

    # warm-up: the model is loaded, every image shape has been through the model, one concurrent round
    warm = _client(url)
    for p in probes:
        warm.predict(handle_file(p.path), model, api_name="/predict")
    barrier_threads = [threading.Thread(target=lambda p=p: _client(url).predict(
        handle_file(p.path), model, api_name="/predict")) for p in probes[:min(len(probes), clients)]]
    for t in barrier_threads:
        t.start()
    for t in barrier_threads:
        t.join(300)
    if pid is not None:
        report.rss_before_mb = rss_mb(pid)

    start = threading.Barrier(clients)

    def worker(k: int) -> None:
        seen: set[str] = set()
        try:
            c = _client(url)
        except Exception as e:  # noqa: BLE001
            with lock:
                report.errors.append(f"client {k}: could not connect: {type(e).__name__}: {e}")
            return
        with contextlib.suppress(threading.BrokenBarrierError):
            start.wait(120)
        for r in range(requests):
            probe = probes[(k * 7 + r) % len(probes)]        # different clients, different images at once
            t0 = time.perf_counter()
            try:
                answer = c.predict(handle_file(probe.path), model, api_name="/predict")
            except Exception as e:  # noqa: BLE001
                seen.add(probe.sha256)    # the server may have computed (and cached) it before the failure
                with lock:
                    report.requests += 1
                    report.errors.append(f"client {k} request {r} ({os.path.basename(probe.path)}): "
                                         f"{type(e).__name__}: {str(e)[:200]} [at {_where(e)}]")
                continue
            dt = time.perf_counter() - t0
            problems = check_answer(probe, answer, model)
            cached = bool(answer[2].get("cached"))
            if probe.sha256 not in seen and cached:
                problems.append(f"{os.path.basename(probe.path)}: first request of session {k} says cached "
                                f"(another session's result?)")
            seen.add(probe.sha256)
            with lock:
                report.requests += 1
                report.latencies.append(dt)
                report.mismatches.extend(f"client {k} request {r}: {p}" for p in problems)
                if log is not None and report.requests % max(1, clients * requests // 10) == 0:
                    print(f"  {report.requests}/{clients * requests} requests", file=log, flush=True)

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout_s
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    report.wall_s = time.perf_counter() - t0
    hung = sum(t.is_alive() for t in threads)
    if hung:
        report.errors.append(f"{hung} client threads still running after {timeout_s:.0f} s")
    if pid is not None:
        time.sleep(1.0)
        report.rss_after_mb = rss_mb(pid)
    return report


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=25)
    ap.add_argument("--model", default="demo-vit")
    ap.add_argument("--rss-budget-mb", type=float, default=150.0)
    ap.add_argument("--url", help="a running app (default: start one)")
    ap.add_argument("--pid", type=int, help="its server process id (for the RSS check)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="viz_load_") as folder:
        probes = make_probes(folder, args.model)
        print(f"{len(probes)} images ({sum(p.kind == 'shapes' for p in probes)} shapes, "
              f"{sum(p.kind == 'photo' for p in probes)} photos); {args.clients} clients x {args.requests} requests",
              flush=True)
        if args.url:
            server = contextlib.nullcontext((args.url, args.pid))
        else:
            server = serve(args.model)
        with server as (url, pid):
            report = run_load(url, probes, args.clients, args.requests, args.model, pid, args.rss_budget_mb,
                              log=sys.stdout)
    print(report.table())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
