"""`pip install .` gives an `attention-viz` command that works from any directory.

The package is installed (no dependencies, no build isolation: no network) into a fresh virtual
environment that sees this environment's packages through a .pth file; the command then runs from
an unrelated folder, where `python -m attention` from the repository root would not work.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _copy_sources(dest: str) -> None:
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
        ".git", "tests", "benchmarks", "docs", "__pycache__", "build", "dist", "*.egg-info", "out", ".venv", "venv",
        ".pytest_cache", "shared"))


@pytest.mark.slow
def test_pip_install_gives_a_working_command_outside_the_repository(tmp_path):
    src = str(tmp_path / "src")
    _copy_sources(src)
    venv = str(tmp_path / "venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    bindir = os.path.join(venv, "bin")
    py = os.path.join(bindir, "python")
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True,
                          capture_output=True, text=True).stdout.strip()
    # the new environment sees this one's packages (torch, timm, pip, setuptools...) but not the repository
    with open(os.path.join(site, "deps.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run([py, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q", src],
                       capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    exe = os.path.join(bindir, "attention-viz")
    assert os.path.isfile(exe)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    img = elsewhere / "shape.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(img)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ATTENTION_ASSETS")}
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    r = subprocess.run(["attention-viz", "export", "--model", "demo-vit", "--out", "out", "--quiet", "shape.png"],
                       cwd=str(elsewhere), env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    meta = json.loads((elsewhere / "out" / "shape.json").read_text())
    assert meta["model"] == "demo-vit" and len(meta["predictions"]) == 5
    # imported from the installed copy, not from a checkout
    r = subprocess.run([py, "-c", "import attention, viz_app; print(attention.__file__); print(viz_app.__file__)"],
                       cwd=str(elsewhere), env=env, capture_output=True, text=True, check=True)
    assert all(line.startswith(venv) for line in r.stdout.split()), r.stdout
    # `attention-viz` alone starts the app; its flags are the app's
    r = subprocess.run(["attention-viz", "app", "--help"], cwd=str(elsewhere), env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "--port" in r.stdout and "--checkpoint" in r.stdout, r.stdout + r.stderr


def test_readme_install_command_is_what_ci_runs():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    block = readme.split("## Install and run", 1)[1].split("```bash", 1)[1].split("```", 1)[0].strip()
    install = block.rsplit(" && python app.py", 1)[0]
    # the project itself is installed (its metadata carries the dependencies), not only its requirements
    assert install.startswith("pip install . ")
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read().splitlines()
    assert install in [line.strip() for line in ci]
