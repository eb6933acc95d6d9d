"""Cohorts: which of the owner's customers leaked? Three designs for serving many cohorts, measured
on distilled students.

The owner serves ``--cohorts`` (100) cohorts of accounts, each under its own fingerprint. A
distiller harvests the answers of ``n_used`` cohorts (1, 3 or 10) and trains a trigram student on
half of the corpus plus those answers, in total a fraction ``--rho`` (10%) of its training tokens
(as in ``eval/power.py``: same teacher, corpus, tokenizer, students and sampling). The student
answers fresh corpus prompts; the owner verifies growing prefixes of those answers (text only,
:mod:`eval.collected`) and asks two questions: is the student radioactive at all (the global test,
``p < 1e-6``), and which cohorts leaked (identification, family-wise alpha 1e-3 by Holm)?

Designs (greenlist, the project's default parameters; all three embed one ``delta`` per token,
so the teacher's text costs the same):

``keyring``
    Separate keys per cohort (:class:`fingerprint.keyring.Keyring`, 100 HKDF-derived keys);
    :func:`fingerprint.verify.keyring.verify_keyring`: the Šidák global test over the cohorts'
    exact tests, Holm over the cohorts for identification. Under H0 for a cohort ("never
    learned from *this* cohort") its test stays exact even when other cohorts leaked: the keys
    are independent.
``shared+code``
    One shared detection key plus per-cohort code bits. A keyed selector splits the windows:
    half carry the shared green list, the other half carry bit ``j`` (keyed, ``--code-bits``
    positions) through the green list of key ``K[j, c_j]``, where ``c`` is the cohort's random
    codeword. Detection: the shared key's exact binomial test on the detection windows (one key,
    no multiplicity, and every cohort's data feeds it). Identification: each cohort's codeword is
    tested by the green count of its own bit keys on the code windows (Binom(n, gamma) under the
    global H0), Holm over the cohorts. That test is exact only when *nobody* leaked: a cohort
    that shares half its bits with a leaking one inherits half of its signal.
    ``shared+code-bitwise`` decodes the same students bit value by bit value instead: each key
    ``K[j, v]`` has its own exact test (exact for a bit value no leaker has, whoever else
    leaked), Holm over the ``2 * bits`` tests, and a cohort is named when all its bit values are
    present (with several leakers, innocent cohorts whose bits the leakers cover are named too).
``buckets``
    A hierarchy: 10 bucket keys, each serving 10 cohorts (a seeded random permutation). The first stage
    is measured here: detection (Šidák over 10 keys) and identification of the buckets holding
    a leaking cohort (Holm over 10). The owner would then re-key the accounts of the flagged
    buckets and collect again (a second round, not simulated): ``n_correct`` counts buckets.

Controls: students distilled with the same budget from the same teacher's *unfingerprinted*
answers, verified against every design's keys (fresh rings per control seed), and every distilled
student verified against the keys of rings nobody served ("other ring"); nothing may be flagged.

Cost: the students are trained once per seed and design and verified on prefixes of one set of
answers (25k to 200k tokens); the keyring design, the one the experiment must settle, has the most
students (``--seeds``), the others fewer (``--seeds-compare``, ``--seeds-other``).

Run (31 CPU-minutes: about 16 minutes on 2 idle cores, 29 on a busy shared 2-core machine):

    python -m eval.cohorts

``--smoke`` runs a tiny strong setting in well under a minute (tests/test_cohorts_eval.py).
Writes eval/results/cohorts.csv, cohorts.md and cohorts.png.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import resource
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eval.collected import token_prefix
from eval.power import SCHEME_PARAMS
from fingerprint.keyring import Keyring
from fingerprint.schemes.base import apply_temperature_top_p, sample_from_logp
from fingerprint.sim.distill import FingerprintedData, corpus_prompts, distill_student, fingerprinted_responses
from fingerprint.sim.generate import generate
from fingerprint.sim.teacher import Teacher, build_teacher
from fingerprint.stats import BinomialNull, holm
from fingerprint.verify import VerifyOptions, text_evidence
from fingerprint.verify.evidence import Evidence
from fingerprint.verify.keyring import verify_keyring

RESULTS = Path(__file__).parent / "results"
DESIGNS = ("keyring", "shared+code", "buckets")
#: What is reported per design: ``shared+code`` students are also decoded bit by bit.
REPORTED = ("keyring", "shared+code", "shared+code-bitwise", "buckets")
SCHEME = "greenlist"
#: The project's default green-list parameters (as eval/power.py uses them), h = 2.
PARAMS = {**SCHEME_PARAMS[SCHEME], "context_width": 2}
#: Global test: detected when p < 1e-6. Identification: family-wise alpha 1e-3 (Holm).
DETECT_LOG10 = -6.0
ALPHA_ID = 1e-3
#: Options of the keyring verification: no decoys (the controls are this experiment's nulls).
OPTIONS = VerifyOptions(alpha=ALPHA_ID, n_decoys=0)
RESPONSE_TOKENS = 200
QUERY_PROMPT_TOKENS = 12
TEACHER_BATCH = 64
STUDENT_BATCH = 128

#: Who the suspect is: a student distilled from this ring's cohorts, or a control.
DISTILLED, PLAIN, OTHER_RING = "distilled", "unfingerprinted teacher", "other ring"
#: Rings nobody served ("other ring" controls) come from seeds offset by this.
FOREIGN_SEED = 5000

FIELDS = ("design", "student", "n_used", "seed", "suspect_tokens", "n_scored", "rho_reached", "global_log10_p", "detected",
          "n_expected", "n_flagged", "n_correct", "false_flags", "weakest_used_log10_p", "strongest_other_log10_p")


def _flat(arrays):
    tokens = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
    return tokens, np.concatenate(([0], np.cumsum([a.size for a in arrays]))).astype(np.int64)


_TEACHER: list[Teacher] = []


def _teacher() -> Teacher:
    """The default teacher, built once per process."""
    if not _TEACHER:
        _TEACHER.append(build_teacher())
    return _TEACHER[0]


# ---- design (b): a shared detection key plus per-cohort code bits ----------------------------
class CodedDesign:
    """Keys of the ``shared+code`` design, derived from one master (a :class:`Keyring` whose
    "cohorts" are the roles ``shared``, ``select`` and ``bit<j>-<v>``), and the cohorts' codewords.

    ``codewords``: ``(n_cohorts, bits)`` uint8, distinct random codewords (seeded).
    """

    def __init__(self, seed: int, *, vocab_size: int, n_cohorts: int, bits: int) -> None:
        roles = ["shared", "select"] + [f"bit{j}-{v}" for j in range(bits) for v in (0, 1)]
        ring = Keyring.from_seed(f"cohorts-code-{seed}", SCHEME, vocab_size=vocab_size, cohorts=roles, **PARAMS)
        self.bits = bits
        self.shared = ring.cohort_key("shared").scheme_object()
        self.select = ring.cohort_key("select").scheme_object()
        self.bit_keys = [[ring.cohort_key(f"bit{j}-{v}").scheme_object() for v in (0, 1)] for j in range(bits)]
        self.gamma = float(PARAMS["gamma"])
        self.context_width = self.shared.context_width
        if 2 ** bits < n_cohorts:
            raise ValueError(f"{bits} code bits cannot give {n_cohorts} cohorts distinct codewords")
        rng = np.random.default_rng([seed, 0xC0DE])
        codes = rng.integers(0, 2, size=(n_cohorts, bits), dtype=np.uint8)
        while len({c.tobytes() for c in codes}) < n_cohorts:  # redraw until distinct
            codes = rng.integers(0, 2, size=(n_cohorts, bits), dtype=np.uint8)
        self.codewords = codes

    def route(self, windows: np.ndarray) -> np.ndarray:
        """``(n,)`` int64 for windows ``(n, h)``: -1 for a detection window (shared key), else the
        code bit ``j`` the window carries. A keyed function of the window alone, so selecting by
        it keeps every key's null exact."""
        windows = np.maximum(np.asarray(windows, dtype=np.int64), 0)
        v = self.select.tuple_values(windows, np.zeros(windows.shape[0], dtype=np.int64))
        j = ((v >> np.uint64(1)) % np.uint64(self.bits)).astype(np.int64)
        return np.where((v & np.uint64(1)) == 1, j, -1)

    def sampler(self, cohort: int) -> "CodedSampler":
        return CodedSampler(self, self.codewords[cohort])

    def scores(self, ev: Evidence) -> tuple[float, np.ndarray, np.ndarray]:
        """On the evidence's tuples: the detection log10 p (the shared key on the detection
        windows), each cohort's codeword log10 p ``(n_cohorts,)`` (its bit keys on the code
        windows) and each bit value's log10 p ``(bits, 2)`` (key ``K[j, v]`` on the windows of bit
        ``j``). All exact binomial tails under the global H0."""
        h = self.context_width
        words = ev.blocks.reshape(ev.blocks.shape[0], -1)
        route = self.route(words[:, 1:h + 1])
        det = route < 0
        n_det = int(det.sum())
        greens_shared = float(self.shared.scores_of_blocks(ev.blocks[det]).sum()) if n_det else 0.0
        detect = float(BinomialNull(n_det, self.gamma).log10_sf(np.array([greens_shared]))[0]) if n_det else 0.0
        greens = np.zeros((self.bits, 2))
        n_bit = np.zeros(self.bits, dtype=np.int64)
        for j in range(self.bits):
            rows = route == j
            n_bit[j] = int(rows.sum())
            if n_bit[j]:
                for v in (0, 1):
                    greens[j, v] = float(self.bit_keys[j][v].scores_of_blocks(ev.blocks[rows]).sum())
        n_code = int(n_bit.sum())
        totals = greens[np.arange(self.bits)[None, :], self.codewords].sum(axis=1)
        per_cohort = (BinomialNull(n_code, self.gamma).log10_sf(totals) if n_code
                      else np.zeros(len(self.codewords)))
        bit_lp = np.zeros((self.bits, 2))
        for j in range(self.bits):
            if n_bit[j]:
                bit_lp[j] = BinomialNull(int(n_bit[j]), self.gamma).log10_sf(greens[j])
        return min(0.0, detect), np.minimum(0.0, per_cohort), np.minimum(0.0, bit_lp)


class CodedSampler:
    """The embed side of ``shared+code`` for one cohort: each row's window picks the shared key
    or the key of (bit j, the cohort's bit value); one green list, one ``delta`` per token, as
    for a single key. Used by :func:`fingerprint.sim.generate.generate` as its ``scheme``."""

    def __init__(self, design: CodedDesign, codeword: np.ndarray) -> None:
        self.design = design
        self.codeword = codeword
        self.context_width = design.context_width

    def sample(self, logits: np.ndarray, contexts: np.ndarray, rng: np.random.Generator, *,
               temperature: float = 1.0, top_p: float = 1.0) -> np.ndarray:
        logp = apply_temperature_top_p(np.asarray(logits, dtype=np.float64), temperature, top_p)
        contexts = np.asarray(contexts, dtype=np.int64)
        route = self.design.route(contexts)
        out = np.empty_like(logp)
        for g in np.unique(route):
            rows = route == g
            scheme = self.design.shared if g < 0 else self.design.bit_keys[g][int(self.codeword[g])]
            out[rows] = scheme.bias_logits(logp[rows], contexts[rows])  # rows without a full context: no bias
        return sample_from_logp(out, rng)


# ---- one seed ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rings:
    """Every design's keys for one seed."""

    keyring: Keyring
    coded: CodedDesign
    buckets: Keyring
    bucket_of: np.ndarray  # (n_cohorts,) int64: the bucket serving each cohort


def rings_for(seed: int, *, vocab_size: int, n_cohorts: int, n_buckets: int, code_bits: int) -> Rings:
    ring = Keyring.from_seed(f"cohorts-{seed}", SCHEME, vocab_size=vocab_size, cohorts=n_cohorts, **PARAMS)
    buckets = Keyring.from_seed(f"cohorts-bucket-{seed}", SCHEME, vocab_size=vocab_size, cohorts=n_buckets, **PARAMS)
    perm = np.random.default_rng([seed, 0xB0C]).permutation(n_cohorts)
    bucket_of = np.empty(n_cohorts, dtype=np.int64)
    bucket_of[perm] = np.arange(n_cohorts) * n_buckets // n_cohorts  # equal buckets, keyed membership
    coded = CodedDesign(seed, vocab_size=vocab_size, n_cohorts=n_cohorts, bits=code_bits)
    return Rings(ring, coded, buckets, bucket_of)


def _sampler(design: str, rings: Rings, cohort: int):
    if design == "keyring":
        return rings.keyring.cohort_key(rings.keyring.cohorts[cohort]).scheme_object()
    if design == "buckets":
        b = int(rings.bucket_of[cohort])
        return rings.buckets.cohort_key(rings.buckets.cohorts[b]).scheme_object()
    return rings.coded.sampler(cohort)


def _harvest(teacher: Teacher, samplers: list, n_fp: int, rng: np.random.Generator) -> FingerprintedData:
    """The distiller's harvest: ``n_fp`` tokens of teacher answers, an equal share from each
    cohort's sampler (``None``: the unfingerprinted teacher), shuffled together."""
    share = -(-n_fp // len(samplers))
    prompts, responses = [], []
    for s in samplers:
        part = fingerprinted_responses(teacher, s, share, rng=rng, response_tokens=RESPONSE_TOKENS,
                                       batch_size=TEACHER_BATCH)
        prompts += part.prompts
        responses += part.responses
    order = rng.permutation(len(responses))
    return FingerprintedData([prompts[i] for i in order], [responses[i] for i in order])


def _evaluate(design: str, rings: Rings, ev: Evidence, used: np.ndarray) -> dict:
    """Global log10 p, flagged and expected sets of one design on one evidence."""
    if design == "keyring":
        res = verify_keyring(ev, rings.keyring, options=OPTIONS, correction="holm")
        ids = rings.keyring.cohorts
        lp = np.array([res.cohort(c).test.log10_pvalue for c in ids])
        flagged = {rings.keyring.index_of(c) for c in res.flagged}
        expected = set(int(u) for u in used)
        glob = res.global_log10_pvalue
    elif design == "buckets":
        res = verify_keyring(ev, rings.buckets, options=OPTIONS, correction="holm")
        lp = np.array([res.cohort(c).test.log10_pvalue for c in rings.buckets.cohorts])
        flagged = {rings.buckets.index_of(c) for c in res.flagged}
        expected = set(int(rings.bucket_of[u]) for u in used)
        glob = res.global_log10_pvalue
    else:
        glob, lp, bit_lp = rings.coded.scores(ev)
        level = math.log10(ALPHA_ID)
        if design == "shared+code":
            hits = holm(lp) <= level
        else:  # bitwise: a cohort whose every bit value is present (Holm over the 2 * bits tests)
            present = (holm(bit_lp.ravel()) <= level).reshape(bit_lp.shape)
            codes = rings.coded.codewords
            hits = present[np.arange(codes.shape[1])[None, :], codes].all(axis=1)
        flagged = set(np.flatnonzero(hits).tolist()) if glob <= level else set()
        expected = set(int(u) for u in used)
    others = np.setdiff1d(np.arange(lp.size), np.array(sorted(expected), dtype=np.int64))
    return {"global_log10_p": round(float(glob), 3), "detected": bool(glob <= DETECT_LOG10),
            "n_expected": len(expected), "n_flagged": len(flagged), "n_correct": len(flagged & expected),
            "false_flags": len(flagged - expected),
            "weakest_used_log10_p": round(float(max(lp[sorted(expected)])), 3) if expected else math.nan,
            "strongest_other_log10_p": round(float(lp[others].min()), 3) if others.size else math.nan}


def _reported(designs: list[str]) -> list[str]:
    return [r for r in REPORTED if r.split("-bitwise")[0] in designs]


def run_job(job: tuple) -> list[dict]:
    """The students of one seed, each verified on prefixes of its answers.

    ``job``: ``(seed, n_used, designs, options)``. ``n_used`` > 0: one student per design, distilled
    from the answers of ``n_used`` cohorts of this seed's rings; each is verified against its own
    design's keys and, as an "other ring" control, against the keys of a ring nobody served.
    ``n_used`` = 0: one control student distilled from the unfingerprinted teacher, verified
    against every design's keys."""
    seed, n_used, designs, o = job
    t0 = time.time()
    teacher = _teacher()
    v = teacher.vocab_size
    ring_kw = {"vocab_size": v, "n_cohorts": o["cohorts"], "n_buckets": o["buckets"], "code_bits": o["code_bits"]}
    rings = rings_for(seed, **ring_kw)
    foreign = rings_for(FOREIGN_SEED + seed, **ring_kw) if n_used else None
    base = np.random.default_rng(1000 + seed)
    n_par = teacher.offsets.size - 1
    clean_par = np.sort(base.choice(n_par, size=int(n_par * o["corpus_fraction"]), replace=False))
    clean_tokens, clean_offsets = _flat([teacher.tokens[teacher.offsets[i]:teacher.offsets[i + 1]] for i in clean_par])
    order = base.permutation(o["cohorts"])  # the cohorts a distiller uses: the first n_used (nested)
    used = np.sort(order[:n_used])
    none = np.zeros(0, dtype=np.int64)
    rho = o["rho"]
    n_fp = int(math.ceil(rho * clean_tokens.size / (1 - rho)))
    budgets = o["budgets"]
    n_queries = -(-max(budgets) // RESPONSE_TOKENS)
    students = [(None, designs)] if n_used == 0 else [(d, [d]) for d in designs]
    rows = []
    for design, tested in students:
        # common random numbers: every design of a seed sees the same prompts and sampling stream
        rng = np.random.default_rng([seed, n_used, 7])
        samplers = [None] if design is None else [_sampler(design, rings, int(c)) for c in used]
        pool = _harvest(teacher, samplers, n_fp, rng)
        student, reached = distill_student(clean_tokens, clean_offsets, pool, rho, vocab_size=v)
        queries, _ = corpus_prompts(teacher, n_queries, length=QUERY_PROMPT_TOKENS, rng=rng)
        answers = generate(student, queries, RESPONSE_TOKENS, rng, batch_size=STUDENT_BATCH)
        tokens, offsets = _flat(answers)
        prompts = _flat(queries)
        checks = ([(PLAIN, rings, none)] if design is None
                  else [(DISTILLED, rings, used), (OTHER_RING, foreign, none)])
        for b in budgets:
            t_b, o_b, pt_b, po_b = token_prefix(tokens, offsets, *prompts, b)
            ev = text_evidence(t_b, o_b, context_width=PARAMS["context_width"], vocab_size=v, prompt_tokens=pt_b,
                               prompt_offsets=po_b)
            for student_kind, ring_set, truth in checks:
                for d in _reported(tested):
                    r = _evaluate(d, ring_set, ev, truth)
                    rows.append({"design": d, "student": student_kind, "n_used": n_used, "seed": seed,
                                 "suspect_tokens": b, "n_scored": ev.counts.scored,
                                 "rho_reached": round(reached, 5), **r})
        last = [r for r in rows if r["suspect_tokens"] == max(budgets) and r["student"] != OTHER_RING
                and (design is None or r["design"].startswith(design))]
        print(f"  seed {seed} n_used {n_used} {design or 'control (unfingerprinted teacher)'}: " + "; ".join(
            f"{r['design']} log10 p {r['global_log10_p']:.1f}, flagged {r['n_correct']}/{r['n_expected']}"
            f" + {r['false_flags']} false" for r in last) + f" ({time.time() - t0:.0f}s)", file=sys.stderr, flush=True)
    return rows


# ---- summaries -----------------------------------------------------------------------------
def _exact(r: dict) -> bool:
    return r["n_correct"] == r["n_expected"] and r["false_flags"] == 0


def _select(rows: list[dict], design: str, student: str, n_used: int | None = None, budget: int | None = None):
    return [r for r in rows if r["design"] == design and r["student"] == student
            and (n_used is None or r["n_used"] == n_used) and (budget is None or r["suspect_tokens"] == budget)]


def tokens_needed(rows: list[dict], design: str, n_used: int, what: str, share: float = 0.9) -> float:
    """Smallest budget at which at least ``share`` of the seeds pass (``what``: "detect" or
    "identify" exactly) at that budget; inf when no budget does."""
    for b in sorted({r["suspect_tokens"] for r in rows}):
        sel = _select(rows, design, DISTILLED, n_used, b)
        ok = sum(r["detected"] if what == "detect" else _exact(r) for r in sel)
        if sel and ok >= math.ceil(share * len(sel)):
            return float(b)
    return math.inf


def summarize(rows: list[dict]) -> tuple[str, str]:
    """The summary table (one row per design and student group) and the controls' sentence."""
    budgets = sorted({r["suspect_tokens"] for r in rows})
    designs = [d for d in REPORTED if any(r["design"] == d for r in rows)]
    used_values = sorted({r["n_used"] for r in rows if r["student"] == DISTILLED})
    head = ("| design | students | seeds | " + " | ".join(f"{b // 1000}k tokens" for b in budgets)
            + " | tokens to detect | tokens to identify exactly |")
    lines = [head, "|---|---|---|" + "---|" * len(budgets) + "---|---|"]

    def fmt(t: float) -> str:
        return f"> {max(budgets) // 1000}k" if math.isinf(t) else f"{t / 1000:g}k"

    for d in designs:
        for n in used_values:
            sel = _select(rows, d, DISTILLED, n)
            if not sel:
                continue
            k = len({r["seed"] for r in sel})
            cells = []
            for b in budgets:
                at = _select(rows, d, DISTILLED, n, b)
                cells.append(f"{np.median([r['global_log10_p'] for r in at]):.1f} · {sum(r['detected'] for r in at)}"
                             f"/{k} · {sum(_exact(r) for r in at)}/{k}")
            lines.append(f"| {d} | {n} cohort{'s' if n > 1 else ''} used | {k} | " + " | ".join(cells)
                         + f" | {fmt(tokens_needed(rows, d, n, 'detect'))} | {fmt(tokens_needed(rows, d, n, 'identify'))} |")
        sel = [r for r in rows if r["design"] == d and r["student"] != DISTILLED]
        if sel:
            groups = {(r["student"], r["seed"], r["n_used"]) for r in sel}
            k = len(groups)
            cells = []
            for b in budgets:
                at = [r for r in sel if r["suspect_tokens"] == b]
                cells.append(f"{np.median([r['global_log10_p'] for r in at]):.1f} · {sum(r['detected'] for r in at)}"
                             f"/{k} · {sum(r['n_flagged'] for r in at)} flagged")
            n_plain = sum(g[0] == PLAIN for g in groups)
            lines.append(f"| {d} | controls ({n_plain} + {k - n_plain}) | {k} | " + " | ".join(cells) + " | | |")
    ctrl = [r for r in rows if r["student"] != DISTILLED]
    n_plain = len({r["seed"] for r in ctrl if r["student"] == PLAIN})
    n_other = len({(r["seed"], r["n_used"], r["design"].split("-bitwise")[0]) for r in ctrl
                   if r["student"] == OTHER_RING})
    # the -bitwise rows repeat shared+code's global test: count each global test once
    hits = [r for r in ctrl if r["detected"] and not r["design"].endswith("-bitwise")]
    where = "; ".join(f"{r['design']}, {r['student']} seed {r['seed']}, {r['suspect_tokens'] // 1000}k tokens: "
                      f"log10 p {r['global_log10_p']:.2f}" for r in hits)
    looks = len([r for r in ctrl if not r["design"].endswith("-bitwise")])
    ctrl_line = (f"Controls: {n_plain} students distilled from the teacher's unfingerprinted answers (tested against "
                 f"every design's keys) and {n_other} distilled students tested against a ring nobody served, at "
                 f"every budget: {sum(r['n_flagged'] for r in ctrl)} cohort(s) or bucket(s) flagged; "
                 f"{len(hits)} of {looks} global tests at p < 1e-6" + (f" ({where})" if hits else "")
                 + f"; smallest global log10 p {min((r['global_log10_p'] for r in ctrl), default=math.nan):.2f}.")
    return "\n".join(lines), ctrl_line


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = sorted({r["suspect_tokens"] for r in rows})
    used_values = sorted({r["n_used"] for r in rows if r["student"] == DISTILLED})
    designs = [d for d in REPORTED if any(r["design"] == d for r in rows)]
    styles = {"keyring": "-o", "shared+code": "--s", "shared+code-bitwise": "-.x", "buckets": ":^"}
    colors = {n: f"C{i}" for i, n in enumerate(used_values)}
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for d in designs:
        for n in used_values:
            sel = _select(rows, d, DISTILLED, n)
            if not sel:
                continue
            label = f"{d}, {n} used"
            if not d.endswith("-bitwise"):  # same global test as shared+code
                med = [np.median([-r["global_log10_p"] for r in sel if r["suspect_tokens"] == b]) for b in budgets]
                axes[0].plot(budgets, med, styles[d], color=colors[n], label=label)
            frac = [np.mean([_exact(r) for r in sel if r["suspect_tokens"] == b]) for b in budgets]
            axes[1].plot(budgets, frac, styles[d], color=colors[n], label=label)
    ctrl = [r for r in rows if r["student"] != DISTILLED and not r["design"].endswith("-bitwise")]
    if ctrl:
        med = [np.median([-r["global_log10_p"] for r in ctrl if r["suspect_tokens"] == b]) for b in budgets]
        axes[0].plot(budgets, med, "-", color="grey", label="controls (all designs)")
    axes[0].axhline(-DETECT_LOG10, color="k", ls=":", lw=1, label="p = 1e-6")
    axes[0].set_xscale("log")
    axes[0].set_yscale("symlog", linthresh=10)
    axes[0].set_ylim(bottom=0)
    axes[0].set_xlabel("suspect tokens collected")
    axes[0].set_ylabel("-log10 p of the global test (median over seeds)")
    axes[0].legend(fontsize=7)
    axes[1].set_xscale("log")
    axes[1].set_ylim(-0.03, 1.03)
    axes[1].set_xlabel("suspect tokens collected")
    axes[1].set_ylabel("share of seeds: the leakers flagged and nothing else")
    axes[1].legend(fontsize=7)
    fig.suptitle("Cohort fingerprints: students distilled from the answers of n of 100 cohorts "
                 "(10% of their training tokens)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10,
                    help="keyring students distilled from --main-n-used cohorts (default 10)")
    ap.add_argument("--seeds-compare", type=int, default=3,
                    help="students of the other designs for --main-n-used (seeds 0.., the keyring's first ones; "
                         "default 3)")
    ap.add_argument("--seeds-other", type=int, default=2,
                    help="students per design for the other --n-used values (default 2)")
    ap.add_argument("--control-seeds", type=int, default=20,
                    help="control students distilled from the unfingerprinted teacher (default 20; every "
                         "distilled student is also an 'other ring' control)")
    ap.add_argument("--n-used", default="1,3,10", help="numbers of cohorts whose answers a student is distilled from")
    ap.add_argument("--main-n-used", type=int, default=3, help="the n_used value run with --seeds (default 3)")
    ap.add_argument("--designs", default=",".join(DESIGNS))
    ap.add_argument("--cohorts", type=int, default=100)
    ap.add_argument("--buckets", type=int, default=10, help="bucket keys of the hierarchy design (default 10)")
    ap.add_argument("--code-bits", type=int, default=16, help="codeword length of the shared+code design (default 16)")
    ap.add_argument("--rho", type=float, default=0.1, help="fingerprinted share of each student's training tokens")
    ap.add_argument("--budgets", default="25000,50000,100000,150000,200000", help="suspect token counts (prefixes)")
    ap.add_argument("--corpus-fraction", type=float, default=0.5,
                    help="share of the corpus the students train on besides the harvest (default 0.5)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--smoke", action="store_true",
                    help="a tiny strong setting (one student per design distilled from 1 cohort, rho 50%%, 1%% of "
                         "the corpus, 6k tokens; one control): under a minute")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if args.smoke:
        args.seeds, args.seeds_compare, args.seeds_other, args.control_seeds = 1, 1, 0, 1
        args.n_used, args.main_n_used = "1", 1
        args.rho, args.corpus_fraction, args.budgets = 0.5, 0.01, "3000,6000"
    designs = [d for d in args.designs.split(",") if d]
    bad = set(designs) - set(DESIGNS)
    if bad or not designs:
        ap.error(f"unknown design(s) {sorted(bad)}; known: {', '.join(DESIGNS)}")
    if not 0 < args.rho < 1:
        ap.error(f"--rho must be in (0, 1), got {args.rho}")
    o = {"cohorts": args.cohorts, "buckets": args.buckets, "code_bits": args.code_bits, "rho": args.rho,
         "budgets": sorted(int(x) for x in args.budgets.split(",")), "corpus_fraction": args.corpus_fraction}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    jobs = []
    for n in (int(x) for x in args.n_used.split(",") if x):
        for s in range(max(args.seeds, args.seeds_compare) if n == args.main_n_used else args.seeds_other):
            ds = [d for d in designs if n != args.main_n_used
                  or (s < args.seeds if d == "keyring" else s < args.seeds_compare)]
            if ds:
                jobs.append((s, n, ds, o))
    jobs += [(100 + s, 0, designs, o) for s in range(args.control_seeds)]
    jobs.sort(key=lambda j: -len(j[2]))  # the longest jobs first
    print(f"cohorts: {len(jobs)} jobs ({sum(len(j[2]) if j[1] else 1 for j in jobs)} students) on "
          f"{args.workers} worker(s)", file=sys.stderr, flush=True)
    rows: list[dict] = []
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as ex:
            for r in ex.map(run_job, jobs):
                rows.extend(r)
    else:
        for j in jobs:
            rows.extend(run_job(j))
    kinds = (DISTILLED, PLAIN, OTHER_RING)
    rows.sort(key=lambda r: (REPORTED.index(r["design"]), kinds.index(r["student"]), r["n_used"], r["seed"],
                             r["suspect_tokens"]))
    with open(out / "cohorts.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(FIELDS))
        w.writeheader()
        w.writerows(rows)
    plot(rows, out / "cohorts.png")
    wall = time.time() - t0
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum(u.ru_utime + u.ru_stime for u in usage)
    given = sys.argv[1:] if argv is None else argv
    command = "python -m eval.cohorts" + (" " + shlex.join(given) if given else "")
    text = render_markdown(rows, cohorts=args.cohorts, corpus_fraction=args.corpus_fraction, rho=args.rho,
                           code_bits=args.code_bits, command=command, wall_s=wall, cpu_s=cpu, workers=args.workers)
    (out / "cohorts.md").write_text(text)
    print(text)
    print(f"wrote {out}/cohorts.csv/.md/.png in {wall:.0f}s")
    return 0


def render_markdown(rows: list[dict], *, cohorts: int, corpus_fraction: float, rho: float, code_bits: int,
                    command: str, wall_s: float, cpu_s: float, workers: int) -> str:
    """eval/results/cohorts.md: what was run, the summary table, the controls and the command."""
    table, ctrl = summarize(rows)
    head = (f"Cohort fingerprints: {cohorts} cohorts ({SCHEME}, gamma {PARAMS['gamma']:g}, delta {PARAMS['delta']:g}, "
            f"h {PARAMS['context_width']}). Trigram students on {corpus_fraction:.0%} of the corpus plus the answers "
            f"of n cohorts ({rho:.0%} of their training tokens in all) answer fresh prompts; text-only "
            f"verification. Each cell: median global log10 p · seeds detected (p < 1e-6) · seeds exactly "
            f"identified (every leaking cohort, or its bucket for `buckets`, flagged at family-wise alpha "
            f"{ALPHA_ID:g} by Holm, and nothing else); for controls, cohorts flagged over all seeds. Tokens to "
            f"detect / identify: the smallest budget at which at least 90% of the seeds do.\n\n"
            f"Designs: `keyring`, one key per cohort; `shared+code`, one shared detection key and a {code_bits}-bit "
            f"codeword per cohort, each codeword tested by its bit keys' green rate (`-bitwise`: the same students "
            f"decoded bit value by bit value); `buckets`, the first stage of a hierarchy, 10 keys of 10 cohorts "
            f"(it names buckets, not cohorts).\n\n")
    foot = (f"\n\n{ctrl}\n\nCommand: `{command}` ({wall_s / 60:.1f} minutes wall, {cpu_s / 60:.1f} CPU-minutes, "
            f"{workers} worker(s)).\n")
    return head + table + foot


def read_rows(path: str | os.PathLike[str]) -> list[dict]:
    """Rows of a cohorts.csv with their numbers and flags parsed (as :func:`run_job` returns them)."""
    ints = ("n_used", "seed", "suspect_tokens", "n_scored", "n_expected", "n_flagged", "n_correct", "false_flags")
    floats = ("rho_reached", "global_log10_p", "weakest_used_log10_p", "strongest_other_log10_p")
    with open(path, newline="") as fh:
        return [{**r, **{k: int(r[k]) for k in ints}, **{k: float(r[k]) for k in floats},
                 "detected": r["detected"] == "True"} for r in csv.DictReader(fh)]


if __name__ == "__main__":
    sys.exit(main())
