"""Running the app in a subprocess on a free port (for the browser and API tests, and load tests)."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Iterator, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def served_app(*args: str, timeout: float = 150.0, env: Optional[dict] = None) -> Iterator[str]:
    """``python app.py ARGS --port FREE`` with HF_HUB_OFFLINE=1; yields its URL, stops it afterwards.

    On a start failure the server's output is in the exception message.
    """
    with served_app_process(*args, timeout=timeout, env=env) as (url, _pid):
        yield url


@contextlib.contextmanager
def served_app_process(*args: str, timeout: float = 150.0, env: Optional[dict] = None,
                       log_path: Optional[str] = None) -> Iterator[tuple[str, int]]:
    """As `served_app`, yielding (URL, server process id) — the load test reads the server's memory.
    ``log_path``: write the server's output there and keep it (the click benchmark reads its timings)."""
    port = free_port()
    log = (open(log_path, "w+", encoding="utf-8") if log_path else
           tempfile.NamedTemporaryFile("w+", prefix="viz_app_server_", suffix=".log", delete=False))
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "app.py"), *args, "--port", str(port)],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    url = f"http://127.0.0.1:{port}/"
    try:
        t0 = time.monotonic()
        while not _up(url):
            if proc.poll() is not None or time.monotonic() - t0 > timeout:
                log.flush()
                log.seek(0)
                raise RuntimeError(f"the app did not start (exit code {proc.poll()}):\n{log.read()[-4000:]}")
            time.sleep(0.5)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if not log_path:
            os.unlink(log.name)
