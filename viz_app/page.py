"""The page's one state: what one browser tab shows, as one immutable value in one `gr.State`.

Every event of the page takes the `Page` (and the controls it reads, by name), and returns a new `Page`
with the updates it derives from it; nothing else remembers what the page shows. Pictures and captions are
functions of the `Page` (and the session's cached analysis of its image on its model), so none can go
stale: when the model or the image changes, everything that depends on them is re-derived or cleared.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

from .views import View


@dataclass(frozen=True)
class LessonPlace:
    """Where the Learn tab is: the step, step 2's part, and the query the lesson follows."""

    step: str = "tokens"                 # a step id of `viz_app.learn.steps`
    part: str = "1"                      # step 2's part: "1".."4" or "slide"
    layer: Optional[int] = None          # None: the last layer
    head: int = 0
    token: str = "patch"                 # "patch" or a prefix token name ("cls", "dist", "reg0", ...)
    row: int = 0
    col: int = 0
    temperature: float = 1.0

    def with_(self, **kw) -> "LessonPlace":
        return replace(self, **kw)


@dataclass(frozen=True)
class Page:
    """One browser tab's page. ``image``: the uploaded file (Gradio's copy); ``sha``: the sha256 of its
    decoded pixels once analysed (the key of the session's cached analysis, with the model)."""

    model: str
    image: Optional[str] = None
    image_name: Optional[str] = None
    sha: Optional[str] = None
    view: View = field(default_factory=View)
    #: layers the user chose explicitly, per model: kept when the model comes back (other models: default)
    layers: tuple[tuple[str, int], ...] = ()
    tab: str = "attention"               # the top-level tab shown
    presenter: bool = False
    lesson: LessonPlace = field(default_factory=LessonPlace)
    train_seen: int = 0                  # snapshots of the lesson's training run already drawn (step 6)
    lang: str = "en"                     # the page's language (a code of `attention.i18n.LANGUAGES`)

    @property
    def key(self) -> Optional[tuple[str, str]]:
        """(model, image sha) of what the page shows; None before an image is analysed."""
        return (self.model, self.sha) if self.sha else None

    def with_(self, **kw) -> "Page":
        return replace(self, **kw)

    def with_view(self, **kw) -> "Page":
        return replace(self, view=self.view.with_(**kw))

    def with_lesson(self, **kw) -> "Page":
        return replace(self, lesson=self.lesson.with_(**kw))

    def chosen_layer(self, model: Optional[str] = None) -> Optional[int]:
        """The layer the user chose for `model` (default: the page's), or None."""
        return dict(self.layers).get(model or self.model)

    def choose_layer(self, layer: int) -> "Page":
        """The user picked `layer` on the page's model: remember it for that model."""
        kept = tuple((m, l) for m, l in self.layers if m != self.model)
        return replace(self, layers=kept + ((self.model, int(layer)),), view=self.view.with_(layer=int(layer)))
