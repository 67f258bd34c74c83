"""The lesson's words in more than one language: one JSON catalogue per language, looked up by key.

- `t(key, lang="en", **fmt)`: the catalogue string of `key` in `lang`, formatted with ``str.format(**fmt)``
  (placeholders such as ``{layer}`` or ``{weight:.3f}``; the same placeholders in every language).
- `LANGUAGES`: the languages with a catalogue (``en.json``, ``zh-CN.json`` beside this file);
  `normalize_lang` maps what a browser or a user says ("zh", "zh_CN", "zh-Hans", "en-US") to one of them.
- `placeholders(text)`: the ``{name:spec}`` fields of a catalogue string (the test that keeps the
  catalogues in step compares them).
- `fonts`: the CJK font the pictures need (a packaged Noto Sans SC, registered with matplotlib by path).

Adding a language: copy ``en.json`` to ``<code>.json``, translate every value (keep each ``{placeholder}``
as it is), add the code to `LANGUAGES` and its spellings to `_ALIASES`, and extend ``glossary.md``.
"""
from __future__ import annotations

import functools
import json
import os
import string

LANGUAGES = ("en", "zh-CN")
DEFAULT_LANG = "en"
_HERE = os.path.dirname(os.path.abspath(__file__))
_ALIASES = {"en": "en", "en-us": "en", "en-gb": "en", "english": "en",
            "zh": "zh-CN", "zh-cn": "zh-CN", "zh-hans": "zh-CN", "zh-hans-cn": "zh-CN", "zh-sg": "zh-CN",
            "cn": "zh-CN", "chinese": "zh-CN"}


def normalize_lang(lang) -> str:
    """One of `LANGUAGES` for a language tag ("zh_CN", "zh-Hans", "EN-us"); None or "" means English.
    Raises ValueError naming the languages there are."""
    if lang is None or str(lang).strip() == "":
        return DEFAULT_LANG
    tag = str(lang).strip().replace("_", "-").lower()
    if tag in _ALIASES:
        return _ALIASES[tag]
    base = tag.split("-")[0]
    if base == "en":
        return "en"
    raise ValueError(f"unknown language {lang!r}: the lesson speaks {', '.join(LANGUAGES)}")


def catalogue_path(lang: str) -> str:
    return os.path.join(_HERE, f"{normalize_lang(lang)}.json")


@functools.lru_cache(maxsize=None)
def catalogue(lang: str = DEFAULT_LANG) -> dict:
    """The whole catalogue of `lang` ({key: text}); read once."""
    path = catalogue_path(lang)
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"{path}: a catalogue is one JSON object of key -> text")
    return data


def t(key: str, lang: str = DEFAULT_LANG, **fmt) -> str:
    """`key`'s text in `lang`, formatted with `fmt`. A key missing from the catalogue raises KeyError naming
    the key and the file (the catalogue test keeps every key in every language)."""
    table = catalogue(normalize_lang(lang))
    try:
        text = table[key]
    except KeyError:
        raise KeyError(f"no text {key!r} in {catalogue_path(lang)}") from None
    return text.format(**fmt) if fmt else text


def placeholders(text: str) -> set[tuple[str, str]]:
    """The ``(name, format spec)`` of every ``{...}`` field of `text` (``{{`` is a literal brace)."""
    return {(name, spec or "") for _, name, spec, _ in string.Formatter().parse(text) if name is not None}


__all__ = ["LANGUAGES", "DEFAULT_LANG", "normalize_lang", "catalogue", "catalogue_path", "t", "placeholders"]
