"""Turning exceptions into messages in the page: a `gr.Error` with a clear text, never a traceback.

`UserError` (a bad file, an unknown model, a method undefined for this model) carries its own
message. Anything else is a bug or a resource problem: the traceback goes to the server log and the
page says what failed in one line.
"""
from __future__ import annotations

import functools
import logging

import gradio as gr

from attention.errors import UserError
from attention.i18n import t

log = logging.getLogger("viz_app")


def as_gr_error(e: BaseException, lang: str = "en") -> gr.Error:
    said = getattr(e, "i18n", None)
    if isinstance(e, gr.Error) and said is None:
        return e
    if said is not None:      # the error names its catalogue text; its gr.Error keeps it (said again in another lang)
        err = gr.Error(t(said[0], lang, **said[1]), print_exception=False)
        err.i18n = said
        return err
    if isinstance(e, UserError):
        return gr.Error(e.in_app(), print_exception=False)   # worded for the page (its controls, not flags)
    if isinstance(e, MemoryError):
        return gr.Error(t("app.error.memory", lang), print_exception=False)
    log.error("unexpected error", exc_info=e)
    text = str(e).splitlines()[0] if str(e) else ""
    return gr.Error(t("app.error.unexpected", lang, what=f"{type(e).__name__}{': ' + text if text else ''}"),
                    print_exception=False)


def user_facing(fn):
    """Decorator: any exception leaves as a `gr.Error` with a readable message."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as e:  # noqa: BLE001 - every failure becomes one message in the page
            raise as_gr_error(e) from None
    return wrapper
