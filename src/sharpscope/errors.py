"""Errors a user can cause.

Every error that bad input, a bad file or a bad option can trigger is a
:class:`SharpscopeError` subclass with a one-line message.  The CLI prints the
message without a traceback and exits non-zero.
"""

from __future__ import annotations


class SharpscopeError(Exception):
    """Base class for errors caused by user input (files, options, configs)."""


class InputError(SharpscopeError):
    """An input image or file is unreadable, corrupt, or unsuitable (NaN, empty, ...)."""


class AxesError(SharpscopeError):
    """An axes string is unknown or inconsistent with the image shape."""


class ModelFormatError(SharpscopeError):
    """A model file is missing, truncated, or fails validation."""


class ConfigError(SharpscopeError):
    """A configuration value or key is invalid."""


class RangeWarning(UserWarning):
    """An input looks unlike a model's training data (noise or resolution outside its range)."""
