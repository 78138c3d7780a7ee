"""Exceptions raised by fmrivid.

Every error meant for a user names the file or config key, what was expected
and what was found, so that the message alone is enough to fix the input.
"""


class FmrividError(Exception):
    """Base class of every error fmrivid raises on purpose."""


class InputError(FmrividError):
    """Bad input data: a file is missing, malformed or inconsistent."""

    def __init__(self, path, expected, found):
        self.path = str(path)
        self.expected = expected
        self.found = found
        super().__init__(f"{self.path}: expected {expected}; found {found}")


class ConfigError(FmrividError):
    """A configuration key or value is wrong."""


class ModelNotAvailableError(FmrividError):
    """A model spec cannot be resolved offline (not in the local cache)."""
