"""Errors meant for the user: their message is shown as is, without a traceback."""


class UserError(Exception):
    """Something the user can fix (a file, a name, a setting); the message says what and how.

    ``str(e)`` is worded for the command line and the Python API; `in_app()` for the browser, where the
    ways out are the page's controls rather than flags (the same text unless a subclass says otherwise).
    """

    #: (catalogue key, fields) when the message is a catalogue text (`said`): the app says it in the page's
    #: language; None: the message is English only
    i18n = None

    def in_app(self) -> str:
        return str(self)

    @classmethod
    def said(cls, key: str, **fmt):
        """This error with the catalogue text `key` (`attention.i18n`) as its message: English in ``str(e)``,
        and in any language through ``e.i18n``. ``raise ImageError.said("images.pdf", name=name)``."""
        from .i18n import t
        e = cls(t(key, "en", **fmt))
        e.i18n = (key, fmt)
        return e


class ModelNotFoundError(UserError):
    pass


class ModelUnavailableError(UserError):
    """A model cannot be had right now (no network, not cached, a package missing)."""


class WeightsUnavailableError(ModelUnavailableError):
    """Pretrained weights cannot be had right now (no network, not cached).

    ``model``: the name asked for; ``why``: the reason, one clause; ``cache``: where the weights would be
    kept once downloaded (the Hugging Face cache, or torch hub's for torchvision); ``folder_hint``: the
    model can also come from a ``save_pretrained`` folder (Hugging Face models).
    """

    def __init__(self, model: str, why: str, cache: str = "the Hugging Face cache (HF_HOME)",
                 folder_hint: bool = False):
        self.model, self.why, self.cache, self.folder_hint = model, why, cache, folder_hint
        super().__init__(self._text(app=False))

    def _text(self, app: bool) -> str:
        head = f"pretrained weights for {self.model!r} are not available: {self.why}."
        if app:
            online = f"Run the app once on a machine with internet access (they are then kept in {self.cache})"
            own = ("load your own checkpoint (or a save_pretrained folder) under 'Your own model'" if self.folder_hint
                   else "load your own checkpoint under 'Your own model'")
            demo = "The demo-* models in the model menu need no download."
        else:
            online = f"Connect to the internet once (they are then kept in {self.cache})"
            own = ("pass your own weights with --checkpoint PATH, or a save_pretrained folder with --model FOLDER"
                   if self.folder_hint else "pass your own weights with --checkpoint PATH")
            demo = "Offline, the bundled demo models (e.g. --model demo-vit) need no download."
        return f"{head} {online}, copy that cache from a machine that has them, or {own}. {demo}"

    def in_app(self) -> str:
        return self._text(app=True)


class CheckpointError(UserError):
    pass


class LabelsError(UserError):
    pass


class ImageError(UserError):
    pass


class MethodNotDefinedError(UserError):
    """A method asked of a model where it has no meaning (e.g. rollout across Swin's stages)."""
