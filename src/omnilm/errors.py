"""Exceptions raised by omnilm. Each message says what was wrong and what to do."""


class OmniError(ValueError):
    """Base class of every error omnilm raises on bad input or bad configuration."""


class ConfigError(OmniError):
    """A config field (named in the message, and in `field` where known) is invalid."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class MediaError(OmniError):
    """An image, audio clip or video could not be read, or breaks a size limit."""


class PlaceholderMismatchError(OmniError):
    """The number of placeholders in the text disagrees with the media given."""


class ContextLengthError(OmniError):
    """The prompt is longer than the LLM's context window."""
