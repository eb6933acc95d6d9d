"""One exception hierarchy for the whole package.

Every error a user can cause derives from :class:`FingerprintError`; the message
names the offending value and, where it comes from a file, the file, line and field.
"""

from __future__ import annotations

__all__ = [
    "FingerprintError",
    "KeyFileError",
    "ParameterError",
    "TokenError",
    "InputError",
    "EvidenceLockedError",
    "FingerprintWarning",
    "InsecureFileWarning",
]


class FingerprintError(Exception):
    """Base class of every error raised on purpose by fingerprint."""


class ParameterError(FingerprintError, ValueError):
    """A scheme, test or option parameter is invalid (e.g. gamma outside (0, 1))."""


class KeyFileError(FingerprintError):
    """A key file is missing, unreadable, or has an invalid field."""


class TokenError(FingerprintError, ValueError):
    """Token ids are of the wrong dtype, negative, out of vocabulary, or badly laid out."""


class InputError(FingerprintError):
    """An input file or record is malformed (names file, line and field)."""


class EvidenceLockedError(InputError):
    """Another process holds the evidence file's lock (a second collector on the same file)."""


class FingerprintWarning(UserWarning):
    """Base class of the warnings fingerprint issues (printed on stderr by the command line)."""


class InsecureFileWarning(FingerprintWarning):
    """A secret file readable by others, or a key file in an old format without integrity check."""
