"""Fetching pretrained weights: from the local cache first, then the network, and never hanging.

huggingface_hub does the downloading and caching (with its progress bar). Before any download we
check, in a few seconds at most, that the endpoint *answers HTTP* (`reachable`: a connection alone is
not enough — a captive portal or a dead proxy accepts connections and never answers); when it does
not, or when ``HF_HUB_OFFLINE=1``, the caller gets a `ModelUnavailableError` naming the model and the
ways out, instead of minutes of retries.

Timeouts: connecting and each metadata request ``PROBE_TIMEOUT_S``; each read of a download
huggingface_hub's ``HF_HUB_DOWNLOAD_TIMEOUT`` (10 s); and the whole download an overall deadline,
``DEADLINE_S`` (``ATTENTION_VIZ_HUB_DEADLINE``, default 300 s), after which the caller gets the same
clear error (the stuck transfer is left to end on its own, in the background).
"""
from __future__ import annotations

import http.client
import os
import threading
import time
from typing import Callable, Optional, TypeVar
from urllib.parse import urlparse

from ..errors import WeightsUnavailableError

PROBE_TIMEOUT_S = 3.0
DEFAULT_DEADLINE_S = 300.0
T = TypeVar("T")


def deadline_s() -> float:
    """The overall deadline of one download (read at call time: ``ATTENTION_VIZ_HUB_DEADLINE``)."""
    try:
        return max(1.0, float(os.environ.get("ATTENTION_VIZ_HUB_DEADLINE", DEFAULT_DEADLINE_S)))
    except ValueError:
        return DEFAULT_DEADLINE_S
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Does the URL's server answer an HTTP request (any status) within `timeout` seconds in all?"""
    u = urlparse(url)
    answer: list[bool] = []

    def probe():
        cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
        conn = cls(u.hostname, u.port, timeout=timeout)
        try:  # the DNS lookup inside has no timeout of its own, hence the thread with a deadline
            conn.request("HEAD", u.path or "/")
            answer.append(conn.getresponse().status > 0)
        except (OSError, http.client.HTTPException):
            answer.append(False)
        finally:
            conn.close()

    t = threading.Thread(target=probe, daemon=True, name="hub-probe")
    t.start()
    t.join(timeout + 0.5)
    return bool(answer and answer[0])


def within_deadline(fn: Callable[[], T], model_name: str, what: str, seconds: Optional[float] = None) -> T:
    """``fn()`` if it finishes within `seconds` (default `deadline_s`), else the model's unavailable error.
    `fn` runs in a daemon thread: a transfer that hangs past its timeouts and retries is left behind."""
    seconds = deadline_s() if seconds is None else seconds
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e

    t0 = time.monotonic()
    t = threading.Thread(target=run, daemon=True, name=f"hub-download {model_name}")
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise unavailable(model_name, f"{what} did not finish within {time.monotonic() - t0:.0f} s (the hub "
                                      f"answers, but the transfer does not progress)")
    if "error" in box:
        raise box["error"]
    return box["value"]


def cache_dir() -> Optional[str]:
    """Read at call time (huggingface_hub reads its env at import), so HF_HUB_CACHE / HF_HOME changes apply."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def cached_file(repo_id: str, filenames=WEIGHT_FILES) -> Optional[str]:
    from huggingface_hub import try_to_load_from_cache
    for filename in filenames:
        path = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir())
        if isinstance(path, str) and os.path.isfile(path):
            return path
    return None


HF_CACHE = "the Hugging Face cache (HF_HOME)"
TORCH_CACHE = "torch hub's cache (TORCH_HOME, by default ~/.cache/torch/hub/checkpoints)"


def unavailable(model_name: str, why: str, cache: str = HF_CACHE, folder_hint: bool = False) -> WeightsUnavailableError:
    """The error for weights that cannot be had now; its text names the ways out (`WeightsUnavailableError`)."""
    return WeightsUnavailableError(model_name, why, cache, folder_hint)


def fetch_weights(repo_id: str, model_name: str, filenames=WEIGHT_FILES) -> str:
    """Path of the cached weight file of `repo_id` (the first of `filenames` it has), downloading it
    once when possible."""
    path = cached_file(repo_id, filenames)
    if path:
        return path
    if offline():
        raise unavailable(model_name, f"HF_HUB_OFFLINE is set and {repo_id} is not in the local cache")
    if not reachable(endpoint()):
        raise unavailable(model_name, f"the model hub ({endpoint()}) cannot be reached from this machine")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    where = endpoint()      # read once: a retry in the background must not go elsewhere

    def download() -> str:
        last: Exception | None = None
        for filename in filenames:
            try:
                return hf_hub_download(repo_id, filename, cache_dir=cache_dir(), etag_timeout=PROBE_TIMEOUT_S,
                                       endpoint=where)
            except EntryNotFoundError as e:
                last = e
            except Exception as e:  # noqa: BLE001 - network trouble of any kind becomes one clear message
                raise unavailable(model_name, f"downloading {repo_id} failed ({type(e).__name__})") from None
        raise unavailable(model_name, f"{repo_id} has no weight file ({last})")
    return within_deadline(download, model_name, f"downloading {repo_id}")
