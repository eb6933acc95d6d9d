"""Suspect tokens needed for p < 1e-6 at each access level, on the same students.

Per seed: a fresh key (default greenlist, h = 2, gamma = 0.25, delta = 3; ``--scheme`` takes any
scheme of ``eval.power.SCHEME_PARAMS`` whose pairs are scored independently); trigram students trained on
half of the corpus plus a fraction rho (default 2%) of fingerprinted teacher answers. Then,
for the same student and the same token budget:

* **text**: the student's sampled answers (the published radioactivity test, the baseline);
* **logprobs**: the same answers with the student's top-5 logprobs at every position (the
  weighted saddlepoint statistic of ``fingerprint.verify.access``);
* **reading**: clean texts from the teacher (sampled without the fingerprint) fed to the
  student with teacher forcing; its top-1 prediction at every position is scored. Tokens
  counted are tokens fed.

Every point is the verify pipeline (``fingerprint.verify``: the level's evidence, then
``verify_evidence`` with the level's mode) on what was collected up to that many tokens
(:mod:`eval.collected`).

Run (about 10 minutes): ``python -m eval.access --seeds 3``. Writes eval/results/access.csv/.md/.png
(``access-<scheme>.*`` for another scheme).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import numpy as np

from eval.collected import exchange_prefix, token_prefix
from eval.power import SCHEME_PARAMS, scheme_of
from fingerprint.corpus import Exchange, ExchangeSet
from fingerprint.keys import FingerprintKey
from fingerprint.sim.distill import corpus_prompts, distill_student, fingerprinted_responses
from fingerprint.sim.generate import generate
from fingerprint.sim.teacher import build_teacher
from fingerprint.tokenize import token_bytes_table
from fingerprint.verify import VerifyOptions, text_evidence, verify_evidence
from fingerprint.verify.access import VocabMapper, logprob_evidence, reading_evidence

#: The sampling batch the recorded results in eval/results/ were made with (the rows a step
#: samples decide the order of the random draws): kept so that a rerun reproduces them.
RECORDED_BATCH = 512

RESULTS = Path(__file__).parent / "results"
LEVELS = ("text", "logprobs", "reading")
#: The exact test of each access level, without decoys (the fed texts are clean teacher texts).
OPTIONS = {level: VerifyOptions(mode=level, n_decoys=0, fed_texts_clean=level == "reading") for level in LEVELS}


def _flat(arrays):
    return np.concatenate(arrays), np.concatenate(([0], np.cumsum([a.size for a in arrays]))).astype(np.int64)


def run_seed(seed: int, rho: float, max_tokens: int, marks: np.ndarray, scheme_name: str = "greenlist",
             corpus_fraction: float = 0.5) -> list[dict]:
    teacher = build_teacher()
    tb = token_bytes_table(teacher.tokenizer)
    rng = np.random.default_rng(5000 + seed)
    key = FingerprintKey.generate(scheme_of(scheme_name), vocab_size=teacher.vocab_size, context_width=2,
                                  **SCHEME_PARAMS[scheme_name])
    scheme = key.scheme_object()
    n_par = teacher.offsets.size - 1
    half = np.sort(rng.choice(n_par, size=int(n_par * corpus_fraction), replace=False))
    clean_tokens, clean_offsets = _flat([teacher.tokens[teacher.offsets[i]:teacher.offsets[i + 1]] for i in half])
    pool = fingerprinted_responses(teacher, scheme, int(math.ceil(rho * clean_tokens.size / (1 - rho))) + 200,
                                   rng=rng, batch_size=RECORDED_BATCH)
    student, _ = distill_student(clean_tokens, clean_offsets, pool, rho, vocab_size=teacher.vocab_size)
    n_q = max_tokens // 200
    queries, _ = corpus_prompts(teacher, n_q, length=12, rng=rng)
    tops: list = []
    answers = generate(student, queries, 200, rng, batch_size=500, top_logprobs=5, top_out=tops)
    rows = []

    def record(level: str, values: list[float]) -> None:
        for mark, lp in zip(marks, values):
            rows.append({"scheme": scheme_name, "seed": seed, "rho": rho, "level": level, "tokens": int(mark), "log10_p": lp})

    def log10_p(evidence) -> float:
        """The pipeline's exact (unadjusted) p-value of the key on one level's evidence."""
        return verify_evidence(evidence, key, options=OPTIONS[evidence.mode]).results[0].test.log10_pvalue

    vocab = teacher.vocab_size
    # text only
    tokens, offsets = _flat(answers)
    p_tokens, p_offsets = _flat(queries)
    values = []
    for m in marks:
        t_m, o_m, pt_m, po_m = token_prefix(tokens, offsets, p_tokens, p_offsets, int(m))
        values.append(log10_p(text_evidence(t_m, o_m, context_width=2, vocab_size=vocab, prompt_tokens=pt_m,
                                            prompt_offsets=po_m)))
    record("text", values)
    # logprobs of the same answers
    exchanges = []
    for i, (q, a, (ids, lps)) in enumerate(zip(queries, answers, tops)):
        lp = tuple((tb[int(t)], tuple((tb[int(c)], float(v)) for c, v in zip(ids[j], lps[j])))
                   for j, t in enumerate(a))
        exchanges.append(Exchange(f"q{i}", teacher.tokenizer.decode(q), teacher.tokenizer.decode(a), "sim", lp))
    ex = ExchangeSet(exchanges=exchanges)
    mapper = VocabMapper(teacher.tokenizer)
    record("logprobs", [log10_p(logprob_evidence(exchange_prefix(ex, int(m), "logprobs"), teacher.tokenizer, mapper,
                                                 2, vocab)) for m in marks])
    # reading: clean teacher texts fed to the student
    feed_prompts, _ = corpus_prompts(teacher, n_q, length=8, rng=rng)
    fed = generate(teacher.model, feed_prompts, 200, rng, batch_size=500)
    f_tokens, f_offsets = _flat(fed)
    lengths = np.diff(f_offsets)
    text_of = np.repeat(np.arange(lengths.size), lengths)
    pos_in = np.arange(f_tokens.size) - f_offsets[text_of]
    ctx_idx = np.arange(f_tokens.size)[:, None] + np.arange(-student.context_size, 0)
    ctx = np.where(pos_in[:, None] + np.arange(-student.context_size, 0) >= 0, f_tokens[np.maximum(ctx_idx, 0)], -1)
    preds = np.concatenate([student.next_logprobs(ctx[i:i + 4096]).argmax(axis=1) for i in range(0, ctx.shape[0], 4096)])
    exchanges = []
    for i in range(lengths.size):
        seg = range(f_offsets[i], f_offsets[i + 1])
        plp = tuple((tb[int(f_tokens[j])], ((tb[int(preds[j])], 0.0),) if j > f_offsets[i] else ())
                    for j in seg)
        exchanges.append(Exchange(f"f{i}", teacher.tokenizer.decode(fed[i]), "", "sim", None, plp))
    fed_set = ExchangeSet(exchanges=exchanges)
    # the fed texts are clean (sampled without the fingerprint): pairs seen in them are scored
    record("reading", [log10_p(reading_evidence(exchange_prefix(fed_set, int(m), "prompt_logprobs"), mapper, 2, vocab,
                                                exclude_fed_pairs=not OPTIONS["reading"].fed_texts_clean))
                       for m in marks])
    for level in LEVELS:
        last = [r["log10_p"] for r in rows if r["level"] == level][-1]
        print(f"  seed {seed} {level:<8} log10 p at {int(marks[-1]):,} tokens: {last:.1f}", file=sys.stderr, flush=True)
    return rows


def tokens_needed(rows: list[dict], level: str, seed: int, target: float = -6.0) -> float:
    pts = sorted((r["tokens"], r["log10_p"]) for r in rows if r["level"] == level and r["seed"] == seed)
    prev = None
    for t, lp in pts:
        if lp <= target:
            if prev is None:
                return float(t)
            t0, l0 = prev
            return float(t0 + (t - t0) * (l0 - target) / (l0 - lp)) if l0 != lp else float(t)
        prev = (t, lp)
    return math.inf


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rho", type=float, default=0.02)
    ap.add_argument("--max-tokens", type=int, default=200_000)
    ap.add_argument("--corpus-fraction", type=float, default=0.5,
                    help="share of the corpus the students train on besides the pool (default 0.5; smaller "
                         "is quicker, for smoke runs)")
    ap.add_argument("--scheme", default="greenlist", choices=sorted(SCHEME_PARAMS))
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    out = Path(args.out)
    stem = "access" if args.scheme == "greenlist" else f"access-{args.scheme}"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    marks = np.unique(np.geomspace(2000, args.max_tokens, 30).round().astype(np.int64))
    rows: list[dict] = []
    for seed in range(args.seeds):
        rows.extend(run_seed(seed, args.rho, args.max_tokens, marks, args.scheme, args.corpus_fraction))
    with open(out / f"{stem}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [f"Suspect tokens needed for p < 1e-6 at rho = {args.rho:.0%} ({args.scheme} h=2 {SCHEME_PARAMS[args.scheme]}; "
             f"{args.seeds} seeds, budget {args.max_tokens:,} tokens; 'inf' = not reached).", "",
             "| access level | tokens needed per seed | median | vs text | log10 p at budget (median) |",
             "|---|---|---|---|---|"]
    med_text = None
    for level in LEVELS:
        need = [tokens_needed(rows, level, s) for s in range(args.seeds)]
        med = float(np.median(need))
        if level == "text":
            med_text = med
        ratio = (med_text / med) if (med_text and math.isfinite(med_text) and math.isfinite(med)) else (
            math.inf if math.isfinite(med) and not math.isfinite(med_text or math.inf) else math.nan)
        at_budget = np.median([[r["log10_p"] for r in rows if r["level"] == level and r["seed"] == s][-1]
                               for s in range(args.seeds)])
        ratio_s = "1x" if level == "text" else (f"> {args.max_tokens / med:.1f}x fewer" if math.isinf(ratio)
                                                 else f"{ratio:.1f}x fewer" if math.isfinite(ratio) else "n/a")
        lines.append(f"| {level} | {', '.join('inf' if math.isinf(x) else f'{x:,.0f}' for x in need)} | "
                     f"{'inf' if math.isinf(med) else f'{med:,.0f}'} | {ratio_s} | {at_budget:.1f} |")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for level, style in zip(LEVELS, ("-o", "-s", "-^")):
        med = [np.median([r["log10_p"] for r in rows if r["level"] == level and r["tokens"] == m]) for m in marks]
        ax.plot(marks, [-x for x in med], style, ms=3, label=level)
    ax.axhline(6, color="k", ls=":", label="p = 1e-6")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=10)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("suspect tokens (generated, or fed in reading mode)")
    ax.set_ylabel("-log10 p (median over seeds)")
    ax.set_title(f"Access levels at rho = {args.rho:.0%} ({args.scheme})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"{stem}.png", dpi=110)
    print("\n".join(lines))
    print(f"wrote {out}/{stem}.csv/.md/.png in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
