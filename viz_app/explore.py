"""``explore(model)``: the whole app serving a model object you hold (from a notebook or a script).

The object is wrapped by `attention.notebook.as_loaded` into the `LoadedModel` every loader returns and
handed to this app's own `ModelManager` through its loader: the menu lists it under ``name`` (default: the
class name) and loads the other entries as usual. If the manager's LRU drops it, the loader gives the same
object back, so it is never copied, rebuilt or reloaded; the capture leaves its training flags and its
parameters (device, dtype) as found.

Each call builds its own page (its own manager and session cache) and serves it on 127.0.0.1 at a free
port in a background thread; two calls coexist. ``close()`` stops the server (the port is free again) and
drops every reference to the model held here.
"""
from __future__ import annotations

import html
import os
import tempfile
import threading
from typing import Optional

from .models import ModelManager, ModelSpec


class ExploreApp:
    """A running app on one model object: ``url``, ``close()``; inline in Jupyter as an iframe."""

    def __init__(self, demo, manager: ModelManager, name: str, url: str, folder: Optional[str]):
        self.demo, self.manager, self.name, self.url = demo, manager, name, url
        self._folder = folder
        self._lock = threading.Lock()

    @property
    def closed(self) -> bool:
        return self.demo is None

    def close(self) -> None:
        """Stop the server (its port is free afterwards) and forget the model; closing twice is harmless."""
        with self._lock:
            demo, self.demo = self.demo, None
            if demo is None:
                return
            try:
                demo.close(verbose=False)
            finally:
                manager, self.manager = self.manager, None
                with manager._lock:
                    manager._loaded.clear()
                manager._load_model = None     # the loader closure is what held the object
                cb = getattr(demo, "viz_callbacks", None)
                if cb is not None and hasattr(cb.store, "clear"):
                    cb.store.clear()
                if self._folder:
                    import shutil
                    shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> "ExploreApp":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _repr_html_(self) -> str:
        if self.closed:
            return f"<div>attention explorer on <code>{html.escape(self.name)}</code>: closed</div>"
        url = html.escape(self.url, quote=True)
        return (f"<div><a href='{url}' target='_blank'>{url}</a> · attention explorer on "
                f"<code>{html.escape(self.name)}</code> (app.close() stops it)</div>"
                f"<iframe src='{url}' width='100%' height='900' style='border:1px solid #ddd'></iframe>")

    def __repr__(self) -> str:
        return f"<ExploreApp {self.name} at {self.url}{' (closed)' if self.closed else ''}>"


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def explore(model, labels=None, image=None, processor=None, name: Optional[str] = None,
            port: Optional[int] = None, max_models: int = 2) -> ExploreApp:
    """Serve the app on `model` (an ``nn.Module``, a `LoadedModel`, or a name / path) without blocking.

    ``labels``, ``processor``: as for `attention.show`. ``image``: the first picture shown (a path, a PIL
    image or an array; default: the app's first example). ``name``: the model menu's entry (default: the
    class name). ``port``: default a free one. Returns an `ExploreApp` (``url``, ``close()``).
    """
    from attention.models import load_model
    from attention.notebook import _image, as_loaded
    from .callbacks import Callbacks
    from .models import upload_limit_bytes
    from .state import SessionStore
    from .ui import CSS, JS, build_demo

    loaded = as_loaded(model, labels, processor, name, probe=True)   # errors before anything starts
    entry = loaded.name
    photo = _image(image) if image is not None else None

    def loader(arch, **kwargs):
        return loaded if arch == entry else load_model(arch, **kwargs)

    manager = ModelManager(max_models=max_models, pretrained=True, loader=loader)
    manager._adopt(ModelSpec(entry, entry), loaded)       # in the menu, and reloadable through the loader
    folder, first = None, ()
    if photo is not None:        # the first screen shows this picture (the app opens its first example)
        folder = tempfile.mkdtemp(prefix="attention_explore_")
        path = os.path.join(folder, "image.png")
        photo.save(path)
        first = ((path, "your image"),)
    demo = build_demo(Callbacks(manager, SessionStore()), entry, "", first_examples=first)
    chosen = port or _free_port()
    demo.launch(server_name="127.0.0.1", server_port=chosen, prevent_thread_lock=True, inline=False, quiet=True,
                show_error=True, css=CSS, js=JS, max_file_size=upload_limit_bytes(),
                allowed_paths=[folder] if folder else None, footer_links=["api", "gradio"])
    return ExploreApp(demo, manager, entry, f"http://127.0.0.1:{chosen}/", folder)


__all__ = ["explore", "ExploreApp"]
