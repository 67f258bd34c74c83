"""The audit's folder: a manifest, one npz per shard, and resuming where a run stopped.

``OUT/audit.json`` records what was asked (model, methods, settings, the list of images); each
shard ``OUT/shards/shard-00000.npz`` holds the per-image results of ``shard_size`` consecutive
images (maps in float16; the keys are listed in the README). A shard is written to a temporary file
and renamed, so a file with the shard's name is complete; on a re-run with the same ``--out`` a
shard whose file loads and lists exactly its images is kept, anything else (missing, truncated by
a crash, from another run) is computed again.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from typing import Iterator, Optional

import numpy as np

from ..errors import UserError
from .dataset import Item

MANIFEST = "audit.json"
SHARD_DIR = "shards"
VERSION = 1
# settings whose change changes the numbers: a re-run with other values cannot reuse the shards
RESULT_KEYS = ("model", "checkpoint", "labels", "random_init", "methods", "batch_size", "faithfulness_steps",
               "baseline", "shard_size")


def plan(items: list[Item], shard_size: int) -> list[list[Item]]:
    return [items[i:i + shard_size] for i in range(0, len(items), shard_size)]


def shard_path(out: str, k: int) -> str:
    return os.path.join(out, SHARD_DIR, f"shard-{k:05d}.npz")


def items_digest(items: list[Item]) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(json.dumps([it.id, it.label, it.mask is not None]).encode())
    return h.hexdigest()


def encode(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def write_shard(out: str, k: int, payload: bytes) -> str:
    path = shard_path(out, k)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_shard(path: str) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def shard_ok(out: str, k: int, items: list[Item]) -> bool:
    """The shard file exists, loads, and accounts for exactly its images."""
    path = shard_path(out, k)
    if not os.path.isfile(path):
        return False
    try:
        z = load_shard(path)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return False
    if "shard" not in z or int(z["shard"]) != k:
        return False
    done = set(z.get("ids", np.array([], str)).tolist()) | set(z.get("failed_ids", np.array([], str)).tolist())
    return done == {it.id for it in items}


def prepare_out(out: str, spec_dict: dict, items: list[Item], fresh: bool = False) -> Optional[dict]:
    """Create or check ``out``: raises when it holds an audit asked differently (unless ``fresh``,
    which removes the old shards). Returns the manifest written."""
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, MANIFEST)
    want = {"version": VERSION, "settings": {k: spec_dict.get(k) for k in RESULT_KEYS},
            "images": len(items), "images_sha256": items_digest(items)}
    if os.path.isfile(path) and not fresh:
        try:
            with open(path, encoding="utf-8") as f:
                have = json.load(f)
        except (OSError, ValueError):
            have = None
        if have is not None:
            diff = [k for k in RESULT_KEYS if have.get("settings", {}).get(k) != want["settings"][k]]
            if have.get("images_sha256") != want["images_sha256"]:
                diff.append("the list of images")
            if diff:
                raise UserError(f"{out} holds an audit asked differently ({', '.join(diff)}); use another --out, "
                                f"or --fresh to discard it")
    sdir = os.path.join(out, SHARD_DIR)
    if os.path.isdir(sdir):
        for f in os.listdir(sdir):
            # a crashed write leaves a temporary file; --fresh discards every shard
            if f.startswith("shard-") and (fresh or ".tmp-" in f):
                os.remove(os.path.join(sdir, f))
    with open(path, "w", encoding="utf-8") as f:
        json.dump(want, f, indent=2)
    return want


def iter_shards(out: str, n: int) -> Iterator[dict]:
    for k in range(n):
        yield load_shard(shard_path(out, k))


__all__ = ["plan", "shard_path", "encode", "write_shard", "load_shard", "shard_ok", "prepare_out", "iter_shards",
           "MANIFEST", "SHARD_DIR"]
