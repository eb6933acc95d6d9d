"""fingerprint: prove or rule out that a suspect model was trained on your model's outputs.

The owner's model embeds a keyed statistical fingerprint in its sampling
(:mod:`fingerprint.schemes`); a suspect's text is scored against the key and tested with
exact, de-duplicated statistics (:mod:`fingerprint.stats`, :mod:`fingerprint.windows`).
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import FingerprintError, InputError, KeyFileError, ParameterError, TokenError
from .keys import FingerprintKey
from .prf import KeyedPRF
from .schemes import SCHEMES, GreenlistScheme, GumbelScheme, Scheme, TournamentScheme, make_scheme
from .stats import Effect, TestResult, binomial_test, gamma_test, holm
from .windows import DropCounts, Selection, TupleTable, WindowFilter, select_tuples, tuple_table

__all__ = [
    "__version__",
    "FingerprintError", "InputError", "KeyFileError", "ParameterError", "TokenError",
    "FingerprintKey", "KeyedPRF",
    "SCHEMES", "Scheme", "GreenlistScheme", "GumbelScheme", "TournamentScheme", "make_scheme",
    "Effect", "TestResult", "binomial_test", "gamma_test", "holm",
    "DropCounts", "Selection", "TupleTable", "WindowFilter", "select_tuples", "tuple_table",
]
