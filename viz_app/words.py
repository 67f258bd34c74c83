"""The app's words in the page's language: every text the page shows comes from the catalogue
(`attention.i18n`, one JSON file per language), looked up by key.

- Built components say which key each of their text properties shows: ``said(gr.Slider(...),
  label="app.attention.layer", info="app.attention.layer_info")``; ``choices=[("app.key", value), ...]`` for
  radios and menus whose entries are fixed (the value stays the same in every language; handlers compare values,
  never labels). The page is built once, in the server's language; `relabel` gives every said component's
  update for another language.
- Texts a handler computes (captions, notes, messages) are ``tr(ctx, key, **fmt)``: the page's language.
- The page's language: the ``?lang=`` parameter of the URL, else the browser's first language
  (``Accept-Language``), else the server's ``--lang``; the switch in the page's header changes it live (the
  page state is kept: the language is one field of `Page`, and every view is redrawn in it).

Gradio's own widget texts ("Drop Image Here", "Clear") follow the browser's language (Gradio's translations).
"""
from __future__ import annotations

from typing import Any, Optional

import gradio as gr

from attention.i18n import DEFAULT_LANG, LANGUAGES, normalize_lang, t  # noqa: F401 - normalize_lang re-exported

#: the switch's entries: each language by its own name
LANGUAGE_NAMES = {"en": "English", "zh-CN": "简体中文"}

_TEXT_PROPS = ("label", "info", "placeholder", "value")

#: the language the page is built in (set by `viz_app.cli` from ``--lang`` before `build_demo`)
_build_lang = DEFAULT_LANG


def set_build_language(lang: Optional[str]) -> str:
    """The server's language (``--lang``): the page is built in it and it is the default of a new tab."""
    global _build_lang
    _build_lang = normalize_lang(lang)
    return _build_lang


def build_language() -> str:
    return _build_lang


def tr(where: Any, key: str, **fmt) -> str:
    """`key`'s text in the language of `where`: a handler's ctx, a `Page`, or a language tag."""
    lang = where if isinstance(where, str) or where is None else getattr(getattr(where, "page", where), "lang", None)
    return t(key, lang or _build_lang, **fmt)


class Text(str):
    """A text the server writes once (the start notice, a status) that can be said again in another language:
    the English string, plus its catalogue key and fields (a field may itself be a `Text`)."""

    def __new__(cls, key: str, **fmt):
        self = super().__new__(cls, t(key, DEFAULT_LANG, **{k: str(v) for k, v in fmt.items()}))
        self.key, self.fmt = key, fmt
        return self

    def said_in(self, lang: str) -> str:
        return t(self.key, lang, **{k: in_language(v, lang) for k, v in self.fmt.items()})


def in_language(text, lang: str) -> str:
    """`text` in `lang` where it is a `Text`; any other string as it is (a name, a message from elsewhere)."""
    return text.said_in(lang) if isinstance(text, Text) else ("" if text is None else str(text))


class Said:
    """Which catalogue key each text property of one component shows."""

    def __init__(self, props: dict, choices: Optional[list[tuple[str, Any]]] = None):
        self.props, self.choices = props, choices

    def texts(self, lang: str) -> dict:
        out = {p: k(lang) if callable(k) else t(k, lang) for p, k in self.props.items()}
        if self.choices is not None:
            out["choices"] = self.choices(lang) if callable(self.choices) else [(t(k, lang), v) for k, v in self.choices]
        return out


#: every said component of the page, in build order (registered by `said`, named by `name_said`)
_said_components: list = []


def said(component, choices=None, **keys):
    """Record the catalogue keys of `component`'s texts (``label``, ``info``, ``placeholder``, ``value`` — a
    Markdown's or a Button's text), set them in the build language, and return the component. A text may also be
    a function of the language (``value=lambda lang: method_help(lang)``) for texts composed from several keys."""
    unknown = set(keys) - set(_TEXT_PROPS)
    if unknown:
        raise TypeError(f"said(): no text property {sorted(unknown)}; one of {_TEXT_PROPS}")
    component.said = Said(dict(keys), choices if choices is None or callable(choices) else list(choices))
    for prop, text in component.said.texts(_build_lang).items():
        if prop != "value" or isinstance(text, str):     # a gallery's value: the builder passes it (processed)
            setattr(component, prop, text)
    _said_components.append(component)
    return component


def name_said(ui) -> list[str]:
    """Give every said component built so far a name in `ui` (those without one get ``said_<i>``); return the
    names of all of them (the outputs of the language switch)."""
    by_id = {id(ui[n]): n for n in ui.names()}
    names = []
    for i, component in enumerate(_said_components):
        name = by_id.get(id(component))
        if name is None:
            name = f"said_{i}"
            ui[name] = component
        names.append(name)
    _said_components.clear()
    return names


def relabel(ui, names: list[str], lang: str) -> dict:
    """Every said component's texts in `lang`, by name (a menu keeps its value)."""
    return {n: gr.update(**ui[n].said.texts(lang)) for n in names}


def language_of(request, default: Optional[str] = None) -> str:
    """A new tab's language: ``?lang=`` of its URL, else the browser's languages in order of preference
    (``Accept-Language``), else `default` (the server's)."""
    params = getattr(request, "query_params", None) or {}
    asked = params.get("lang") if hasattr(params, "get") else None
    if asked:
        try:
            return normalize_lang(asked)
        except ValueError:
            pass                              # an unknown ?lang= falls back like an unknown browser language
    headers = getattr(request, "headers", None) or {}
    accept = headers.get("accept-language", "") if hasattr(headers, "get") else ""
    for part in accept.split(","):
        tag = part.split(";")[0].strip()
        if not tag or tag == "*":
            continue
        try:
            return normalize_lang(tag)
        except ValueError:
            continue
    return normalize_lang(default or _build_lang)


def switch(initial: str) -> gr.Radio:
    """The visible language switch (each language named in itself)."""
    return said(gr.Radio([(LANGUAGE_NAMES[code], code) for code in LANGUAGES], value=initial, show_label=False,
                         container=False, elem_id="lang-switch"), label="app.lang.label")


#: after a switch: the document's language and ``?lang=`` in the address (a reload keeps the language)
SWITCH_JS = """(lang) => {
  document.documentElement.lang = lang;
  const url = new URL(window.location.href);
  url.searchParams.set('lang', lang);
  window.history.replaceState(null, '', url);
  return [];
}"""
