"""Start the attention explorer: ``python app.py`` serves it at http://127.0.0.1:7860.

Flags: --model, --checkpoint, --labels, --host, --port, --share (see ``python app.py --help``).
Hugging Face Spaces convention: the module-level ``demo`` is built at import, quickly and without
network access (the default model is decided at start or at the first page load).
All UI code lives in the ``viz_app`` package.
"""
import sys

from viz_app.ui import build_demo

demo = build_demo()

if __name__ == "__main__":
    from viz_app.cli import main
    sys.exit(main(demo=demo))
