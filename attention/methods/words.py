"""The methods' words in any language: what a map shows, and why a method does not apply, kept as phrases.

A `Phrase` is a catalogue key (`attention.i18n`, keys ``method.…``) and its values; a value may itself be a
phrase, written out in the same language. A method's account of what it computed is a tuple of phrases
(`MapResult.words`: layer range, head fusion, query …), language-independent facts that a cache can keep; it
becomes text only when shown, ``describe(words, lang)`` — the phrases joined by ``" · "``. So a page that
switches language writes the same map's caption again without computing the map again.

The names and one-line summaries of the registered methods are catalogue entries too
(``method.<name>.label`` / ``.title`` / ``.summary``); `Method.label_in(lang)` and the functions
`attention.methods.base.method_label` / ``method_title`` / ``method_summary`` read them. The class attributes ``label`` / ``title`` /
``summary`` stay the English defaults (the catalogue's English entries are the same text; a method added by
a plugin without catalogue entries keeps its own words in every language).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from ..i18n import DEFAULT_LANG, catalogue, normalize_lang, t

#: the separator between the parts of a map's account (the same in every language)
SEP = " · "


@dataclass(frozen=True)
class Phrase:
    """One catalogue entry with its values: ``key`` and ``values`` as (name, value) pairs (a value that is a
    `Phrase` is written in the same language). Frozen and hashable: a cache can keep it."""

    key: str
    values: tuple[tuple[str, Any], ...] = ()

    def text(self, lang: str = DEFAULT_LANG) -> str:
        fmt = {k: v.text(lang) if isinstance(v, Phrase) else v for k, v in self.values}
        return t(self.key, lang, **fmt) if fmt else t(self.key, lang)

    def __str__(self) -> str:
        return self.text()


def phrase(key: str, **values) -> Phrase:
    """``Phrase(key, values)``: ``phrase("method.words.head", head=3)``."""
    return Phrase(key, tuple(values.items()))


def literal(text: str) -> Phrase:
    """Words that are the same in every language (a plugin's own English description)."""
    return phrase("method.literal", text=text)


def describe(words: Sequence[Phrase], lang: str = DEFAULT_LANG) -> str:
    """The phrases of a map's account written in `lang`, joined by `SEP`."""
    return SEP.join(w.text(lang) for w in words)


# ---------------------------------------------------------------------------- the parts every method shares

def head_words(head) -> Phrase:
    """"head 3" or "mean over heads" (a fusion name: "mean", "max", "min")."""
    if isinstance(head, str):
        return phrase("method.words.fused", fusion=phrase(f"method.fusion.{head}"))
    return phrase("method.words.head", head=head)


def query_words(query) -> Phrase:
    """"default query", "mean over patch queries", "query CLS", "query patch (3, 4)" …"""
    if isinstance(query, str):
        if query in ("auto", "patch_mean", "prefix_mean"):
            return phrase(f"method.query.{query}")
        return phrase("method.query.token", token=query.upper())
    return phrase("method.query.patch", row=int(query[0]), col=int(query[1]))


def layer_words(pos: int, n: int, name: str) -> Phrase:
    """"layer 2 of 0–11 (blocks.2.attn)": one layer's place among the `n` spatial layers."""
    return phrase("method.words.layer_of", layer=pos, last=n - 1, name=name)


def range_words(first: int, last: int, n: int) -> Phrase:
    """"through layer 11 of 0–11" (", from layer 3" when the chain does not start at the first layer)."""
    if first:
        return phrase("method.words.range_from", first=first, last=last, max=n - 1)
    return phrase("method.words.range", last=last, max=n - 1)


# ---------------------------------------------------------------------------- the methods' names

def _field(method, field: str, lang: str) -> str:
    """A method's ``label`` / ``title`` / ``summary`` in `lang` (the class attribute in English, and where the
    catalogue has no entry)."""
    lang = normalize_lang(lang)
    own = getattr(method, field) or ""
    if field == "title":
        own = own or method.label or method.name
    if lang == DEFAULT_LANG:
        return own
    text = catalogue(lang).get(f"method.{method.name}.{field}")
    if text is None and field == "title":
        return _field(method, "label", lang) or own
    return own if text is None else text


def reason_text(reason: Optional[Phrase], lang: str = DEFAULT_LANG) -> Optional[str]:
    return None if reason is None else reason.text(lang)


__all__ = ["Phrase", "phrase", "literal", "describe", "SEP", "head_words", "query_words", "layer_words",
           "range_words", "reason_text"]
