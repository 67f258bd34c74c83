"""Fetching pretrained weights: from the local cache first, then the network, and never hanging.

huggingface_hub does the downloading and caching (with its progress bar). Before any download we
check, in a few seconds at most, that the endpoint answers at all; when it does not, or when
``HF_HUB_OFFLINE=1``, the caller gets a `ModelUnavailableError` naming the model and the ways out,
instead of minutes of retries.
"""
from __future__ import annotations

import os
import socket
import threading
from typing import Optional
from urllib.parse import urlparse

from ..errors import WeightsUnavailableError

PROBE_TIMEOUT_S = 3.0
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Can a TCP connection to the URL's host be opened within `timeout` seconds?"""
    u = urlparse(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    answer: list[bool] = []

    def probe():
        try:  # the DNS lookup inside has no timeout of its own, hence the thread with a deadline
            with socket.create_connection((u.hostname, port), timeout=timeout):
                answer.append(True)
        except OSError:
            answer.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(answer and answer[0])


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
    last: Exception | None = None
    for filename in filenames:
        try:
            return hf_hub_download(repo_id, filename, cache_dir=cache_dir(), etag_timeout=PROBE_TIMEOUT_S)
        except EntryNotFoundError as e:
            last = e
        except Exception as e:  # noqa: BLE001 - network trouble of any kind becomes one clear message
            raise unavailable(model_name, f"downloading {repo_id} failed ({type(e).__name__})") from None
    raise unavailable(model_name, f"{repo_id} has no weight file ({last})")
