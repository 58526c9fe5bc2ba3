"""Error types of Classifr.

Every error a user can cause derives from `ClassifrError`; its message is one readable line that
names the bad value, so the CLI prints it without a traceback and the UI shows it as it is.
Each subclass also derives from the stdlib base a caller would naturally catch.
"""

from __future__ import annotations


class ClassifrError(Exception):
    """Base of the errors Classifr raises on purpose; `str(err)` is a user-facing line."""


class ConfigError(ClassifrError, ValueError):
    """A setting (environment variable, flag) has a bad value."""


class InvalidImageError(ClassifrError, ValueError):
    """An input could not be read as an image (empty, not an image, truncated, unsupported)."""


class ImageTooLargeError(InvalidImageError):
    """An image exceeds a size limit (bytes, pixels or side length); the message names the limit."""


class LabelError(ClassifrError, ValueError):
    """A label is malformed, unknown, or clashes with an existing one."""


class VersionNotFoundError(ClassifrError, KeyError):
    """A model version or alias does not exist in the registry."""

    def __str__(self) -> str:
        # KeyError.__str__ would wrap the message in quotes; keep it one plain line.
        return str(self.args[0]) if self.args else "version not found"


class RegistryError(ClassifrError, OSError):
    """The model registry could not be read or written."""


class ModelLoadError(ClassifrError, OSError):
    """A model checkpoint could not be loaded or is not an image classifier."""


class VersionCheckError(ClassifrError):
    """A version failed a promotion check (checksums, loading, finite scores, ONNX agreement); the
    message says which version and why, in one line."""


class FeedbackError(ClassifrError, ValueError):
    """A confirmation or correction is malformed or does not match the server's record of the prediction."""


class TokenError(ClassifrError, ValueError):
    """An API token name is bad, unknown or taken, or the tokens file cannot be used."""
