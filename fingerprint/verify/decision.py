"""From tests to verdicts: Holm over the keys of a run, the decoy check, and whether the data
could have detected anything at all."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..display import format_alpha, format_plain_p
from ..stats import holm
from .result import (VERDICT_DETECTED, VERDICT_INCONCLUSIVE, VERDICT_INSUFFICIENT, VERDICT_NOT_DETECTED,
                     DecoySummary, Sufficiency)

__all__ = ["adjust", "verdict_of", "mde_log10_alpha", "tokenizer_fit_problem", "TOKENS_PER_CHAR"]

#: The tokens per character a tokenizer that fits its texts gives: English BPE about 0.2-0.3,
#: character-level and CJK text up to about 1.5. Far outside, the texts were tokenized with a
#: tokenizer other than the model's (one token per response, or one per byte).
TOKENS_PER_CHAR = (0.05, 2.0)


def tokenizer_fit_problem(n_chars: int, n_tokens: int) -> str | None:
    """A sentence when ``n_tokens`` tokens for ``n_chars`` characters of response text are
    outside :data:`TOKENS_PER_CHAR` (with at least 1,000 characters to judge by), else None."""
    if n_chars < 1000:
        return None
    rate = n_tokens / n_chars
    lo, hi = TOKENS_PER_CHAR
    if lo <= rate <= hi:
        return None
    return (f"the tokenizer does not fit the texts: {rate:.3g} tokens per character (expected {lo:g} to {hi:g}); "
            f"is it the fingerprinted model's tokenizer?")


def adjust(log10_pvalues: Sequence[float]) -> tuple[np.ndarray, bool]:
    """Holm-adjusted log10 p-values of the keys of one run ``(m,)``, and whether Holm applied
    (it does for more than one key)."""
    lp = np.asarray(log10_pvalues, dtype=np.float64)
    if lp.size > 1:
        return holm(lp), True
    return lp, False


def mde_log10_alpha(alpha: float, n_keys: int) -> float:
    """The level at which one key's data must be able to detect: alpha / m (Holm's first step,
    the most any key can be tested at)."""
    return math.log10(alpha) - math.log10(max(1, n_keys))


def _fmt_effect(x: float) -> str:
    return "any" if not math.isfinite(x) else f"{x:.3g}"


def verdict_of(adjusted_log10_pvalue: float, alpha: float, decoys: DecoySummary | None,
               sufficiency: Sufficiency, *, n_items: int, item_name: str = "tuples",
               input_problem: str | None = None) -> tuple[str, str]:
    """The verdict of one key and a sentence giving the reason.

    * ``inconclusive`` when the decoys' p-values are not uniform (the theoretical null may not
      hold for this input, so neither a finding nor its absence is trusted);
    * ``detected`` when the (Holm-adjusted) p-value is at most alpha;
    * ``inconclusive`` when it is not and ``input_problem`` names a reason the input could not
      show the fingerprint (e.g. a tokenizer that does not fit the texts): a detection stays
      valid whatever the tokenization, an absence of one does not mean anything then;
    * ``insufficient data`` when it is not, and the data could not have detected an effect as
      large as the one the verdict is about (``sufficiency.target_effect``);
    * ``not detected`` otherwise.
    """
    log10_alpha = math.log10(alpha)
    if decoys is not None and not decoys.passed:
        return VERDICT_INCONCLUSIVE, (f"the decoy keys' p-values are not uniform (KS p = {format_plain_p(decoys.ks_pvalue)}): "
                                      f"the theoretical null may not hold for this input (heavy repetition, "
                                      f"tokenizer mismatch?)")
    if adjusted_log10_pvalue <= log10_alpha:
        return VERDICT_DETECTED, f"p-value at or below alpha = {format_alpha(alpha)}"
    if input_problem:
        return VERDICT_INCONCLUSIVE, f"p-value above alpha = {format_alpha(alpha)}, but {input_problem}"
    if not sufficiency.sufficient:
        need = sufficiency.items_needed
        need_s = f"about {need:,.0f}" if math.isfinite(need) else "many more"
        target = _fmt_effect(sufficiency.target_effect)
        if math.isfinite(sufficiency.min_detectable_effect):
            could = f"the smallest effect these could show is {_fmt_effect(sufficiency.min_detectable_effect)}"
        else:
            could = "not even a fully fingerprinted text of this size would reach alpha"
        return VERDICT_INSUFFICIENT, (f"{n_items:,} {item_name} are not enough to detect an effect of {target} at "
                                      f"alpha = {format_alpha(alpha)} ({could}); {need_s} are needed")
    return VERDICT_NOT_DETECTED, (f"p-value above alpha = {format_alpha(alpha)}, and the data could have detected an effect "
                                  f"of {_fmt_effect(sufficiency.min_detectable_effect)} or more")


