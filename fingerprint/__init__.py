"""fingerprint: prove or rule out that a suspect model was trained on your model's outputs.

The owner's model embeds a keyed statistical fingerprint in its sampling
(:mod:`fingerprint.schemes`); :func:`verify` scores a suspect's text against the key and tests it
with exact, de-duplicated statistics, decoy keys as null controls, Holm over keys and a verdict.

>>> import fingerprint
>>> key = fingerprint.FingerprintKey.generate("greenlist", vocab_size=1000)
>>> result = fingerprint.verify([[1, 2, 3, 4, 5]], keys=key, options=fingerprint.VerifyOptions(n_decoys=0))
>>> result.verdict
'insufficient data'
"""

from __future__ import annotations

from .corpus import Exchange, ExchangeSet, read_exchanges
from .errors import FingerprintError, InputError, KeyFileError, ParameterError, TokenError
from .keys import FingerprintKey
from .schemes import SCHEMES, Scheme, make_scheme
from .stats import NullModel, TestResult
from .tokenize import load_tokenizer
from .verify import (VERDICTS, DecoySummary, Evidence, KeyResult, TrajectoryPoint, VerifyOptions, VerifyResult,
                     merge, text_evidence, verify, verify_evidence, verify_exchanges)
from .version import __version__

__all__ = [
    "__version__",
    # verification
    "verify", "verify_exchanges", "verify_evidence", "VerifyOptions", "VerifyResult", "KeyResult", "DecoySummary",
    "TrajectoryPoint", "VERDICTS", "Evidence", "text_evidence", "merge",
    # inputs
    "read_exchanges", "Exchange", "ExchangeSet", "load_tokenizer",
    # keys and schemes
    "FingerprintKey", "Scheme", "SCHEMES", "make_scheme", "NullModel", "TestResult",
    # errors
    "FingerprintError", "InputError", "KeyFileError", "ParameterError", "TokenError",
]
