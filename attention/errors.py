"""Errors meant for the user: their message is shown as is, without a traceback."""


class UserError(Exception):
    """Something the user can fix (a file, a name, a setting); the message says what and how."""


class ModelNotFoundError(UserError):
    pass


class ModelUnavailableError(UserError):
    """Weights cannot be had right now (no network, not cached)."""


class CheckpointError(UserError):
    pass


class LabelsError(UserError):
    pass


class ImageError(UserError):
    pass


class MethodNotDefinedError(UserError):
    """A method asked of a model where it has no meaning (e.g. rollout across Swin's stages)."""
