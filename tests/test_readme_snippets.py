"""The README's Python API snippets run as written, from a directory outside the repository.

They import the installed package (the README's install command installs it), not a checkout: the
snippets run in a fresh interpreter whose working directory holds only ``photo.jpg``, without
PYTHONPATH.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python_api_snippets() -> list[str]:
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_python_api_snippets_run_outside_the_repository(tmp_path):
    snippets = python_api_snippets()
    assert len(snippets) >= 2
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(tmp_path / "photo.jpg")
    code = "\n".join(snippets) + "\nimport attention\nprint('FROM', attention.__file__)\n"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    r = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    where = r.stdout.split("FROM ", 1)[1].strip()
    assert not where.startswith(str(tmp_path))
