"""One idiom for every event of the page: handlers take the `Page` and their inputs **by name** and return
named updates; one wrapper does what every handler needs.

    @handler(inputs=("method", "layer"), outputs=("heatmap", "caption"), needs_image=True)
    def on_controls(ctx: Ctx) -> dict:
        ...
        return {"page": ctx.page.with_view(method=ctx.values.method), "heatmap": picture, ...}

    events.bind(ui.method.input, on_controls)

The wrapper (`Events.bind`): looks up the browser session; reads the page state and the named inputs (Gradio
passes a set of inputs as one dict); refuses with "Pick an image first." when the handler needs an image and
the page has none; turns a failure into **one** warning toast and no update (never an Error badge, never a
half-changed page); logs the server-side time with ``ATTENTION_VIZ_TIMING=1``; and maps the returned names back
to components. ``"page"`` in the returned dict is the new page state.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Optional

import gradio as gr

from attention.errors import UserError
from attention.i18n import t

from .errors import as_gr_error
from .page import Page

log = logging.getLogger("viz_app")
_timing_log = logging.getLogger("viz_app.timing")

PICK_AN_IMAGE = t("app.pick_an_image", "en")


def message_of(e: BaseException, lang: str = "en") -> str:
    """The one-line message a failure shows in the page, in `lang` where the error says which catalogue text
    it is (``e.i18n = (key, fmt)``); the library's other messages are English."""
    err = as_gr_error(e, lang)
    return str(getattr(err, "message", err))


def warn(e: BaseException, suffix: str = "", lang: str = "en") -> None:
    gr.Warning(message_of(e, lang) + suffix, duration=12)


class NoImage(UserError):
    """The handler needs an image and the page has none."""

    i18n = ("app.pick_an_image", {})

    def __init__(self):
        super().__init__(PICK_AN_IMAGE)


class Ui:
    """Every component of the page by name (``ui.heatmap``); `name_of` the reverse lookup."""

    def __init__(self):
        object.__setattr__(self, "_by_name", {})

    def __setattr__(self, name: str, component) -> None:
        self._by_name[name] = component
        object.__setattr__(self, name, component)

    def __setitem__(self, name: str, component) -> None:
        setattr(self, name, component)

    def __getitem__(self, name: str):
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"the page has no component named {name!r}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def names(self) -> list[str]:
        return list(self._by_name)


@dataclass
class Ctx:
    """What a handler gets: the browser session, the page, its inputs by name, progress, the app's services."""

    session: str
    page: Page
    values: SimpleNamespace
    progress: Callable[[float, str], None]
    app: Any                                  # the `viz_app.services.Services` of this app
    event: Any = None                         # gr.SelectData for select events
    request: Any = None                       # the gr.Request (headers, URL parameters)

    @property
    def lang(self) -> str:
        """The page's language."""
        return self.page.lang

    def analysis(self, page: Optional[Page] = None):
        """The session's analysis of the page's image on its model (cached; computed if evicted)."""
        page = page or self.page
        if page.image is None and page.sha is None:
            raise NoImage()
        return self.app.cb.analysis_of(self.session, page.model, page.sha, page.image, self.progress)


def handler(inputs: Iterable[str] = (), outputs: Iterable[str] = (), needs_image: bool = False,
            select: bool = False):
    """Declare a page handler: the names it reads, the names it may update (besides ``page``), whether it
    needs an image, whether it is a select event (``ctx.event`` is the `gr.SelectData`)."""
    def deco(fn):
        fn.page_inputs = tuple(inputs)
        fn.page_outputs = tuple(outputs)
        fn.needs_image = needs_image
        fn.select = select
        return fn
    return deco


_TIMING = os.environ.get("ATTENTION_VIZ_TIMING") == "1"


class Events:
    """Binds declared handlers to Gradio events (see the module docstring)."""

    def __init__(self, ui: Ui, app):
        self.ui, self.app = ui, app
        self.demo = None                        # the `gr.Blocks` (for page-level events such as unload)
        self.followers: list[Callable] = []     # handlers run after every event that may change the page's key
        self._key_events: list = []             # events that may change the key: followers chained in `finish`

    def follow_key(self, fn) -> None:
        """Run handler `fn` after every event that may change the page's (model, image)."""
        self.followers.append(fn)

    def _wrap(self, fn):
        ui, app = self.ui, self.app
        in_names = fn.page_inputs
        out_names = ("page",) + tuple(n for n in fn.page_outputs if n != "page")

        def call(data: dict, request: Optional[gr.Request], progress, event) -> Any:
            t0 = time.perf_counter()
            session = (getattr(request, "session_hash", None) or "local") if request is not None else "local"
            page = data[ui.page]
            values = SimpleNamespace(**{n: data[ui[n]] for n in in_names})
            ctx = Ctx(session, page, values, lambda frac, desc: progress(frac, desc=desc), app, event, request)
            try:
                if fn.needs_image and page.image is None and page.sha is None:
                    raise NoImage()
                out = fn(ctx) or {}
            except Exception as e:  # noqa: BLE001 - one message; the page stays as it was, every control usable
                warn(e, lang=page.lang)
                return gr.skip()
            finally:
                if _TIMING:
                    _timing_log.info("handler %s %.1f ms", fn.__name__, (time.perf_counter() - t0) * 1e3)
            unknown = set(out) - set(out_names)
            if unknown:
                raise RuntimeError(f"{fn.__name__} returned {sorted(unknown)}, not declared in its outputs")
            if not out:
                return gr.skip()
            return {ui[n]: v for n, v in out.items()}

        if fn.select:
            def run(data: dict, evt: gr.SelectData, request: gr.Request, progress=gr.Progress()):
                return call(data, request, progress, evt)
        else:
            def run(data: dict, request: gr.Request, progress=gr.Progress()):
                return call(data, request, progress, None)
        run.__name__ = run.__qualname__ = fn.__name__
        run.page_handler = fn
        return run, {ui.page} | {ui[n] for n in in_names}, [ui[n] for n in out_names]

    def bind(self, trigger, fn, key_change: bool = False, **kw):
        """``trigger(fn)`` with the page state and the declared inputs / outputs. ``key_change``: the event
        may change the page's model or image, so every follower runs after it (chained by `finish`, once
        every follower is known)."""
        run, inputs, outputs = self._wrap(fn)
        kw.setdefault("api_visibility", "private")
        dep = trigger(run, inputs=inputs, outputs=outputs, **kw)
        if key_change:
            self._key_events.append(dep)
        return dep

    def then(self, dep, fn):
        """Run handler `fn` after the event `dep`."""
        run, inputs, outputs = self._wrap(fn)
        return dep.then(run, inputs=inputs, outputs=outputs, api_visibility="private", show_progress="hidden")

    def finish(self) -> None:
        """Chain the followers after every key-changing event (call once, after the whole page is wired)."""
        for dep in self._key_events:
            for follower in self.followers:
                dep = self.then(dep, follower)
        self._key_events = []

    def call(self, fn, page: Page, session: str = "local", event=None, **values) -> dict:
        """Run handler `fn` as an event would, without a browser (scripts and tests): its inputs by name,
        the followers after it when `fn` changed the page's key or language. Returns the new page and the updates by
        name (``"page"`` always present; a refused event: ``{"page": page, "skipped": True}``)."""
        ui = self.ui
        data = {ui.page: page, **{ui[n]: values[n] for n in fn.page_inputs}}
        request = type("Request", (), {"session_hash": session})()
        out = self._wrap(fn)[0](data, event, request, _no_progress) if fn.select else \
            self._wrap(fn)[0](data, request, _no_progress)
        names = {ui[n]: n for n in ui.names()}
        if not isinstance(out, dict) or "__type__" in out:     # gr.skip(): refused (the toast said why)
            return {"page": page, "skipped": True}
        result = {names[c]: v for c, v in out.items()}
        result.setdefault("page", page)
        new = result["page"]
        if (new.model, new.sha, new.image, new.lang) != (page.model, page.sha, page.image, page.lang):
            for follower in self.followers:
                more = self.call(follower, result["page"], session)
                for name, value in more.items():     # as the browser applies them: later props win
                    old = result.get(name)
                    both = isinstance(old, dict) and isinstance(value, dict) and "__type__" in old and "__type__" in value
                    result[name] = {**old, **value} if both else value
        return result


def _no_progress(*args, **kwargs) -> None:
    return None
