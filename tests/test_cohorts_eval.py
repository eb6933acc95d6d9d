"""eval/cohorts: the smoke run of the cohort-design experiment writes its table, and its numbers say
what the experiment claims: a student distilled from one cohort's answers is flagged for that
cohort (keyring) or its bucket, and nothing else; the control student flags nothing."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval import cohorts  # noqa: E402


def test_cohorts_smoke(tmp_path, teacher):
    assert cohorts.main(["--smoke", "--workers", "1", "--out", str(tmp_path)]) == 0
    with open(tmp_path / "cohorts.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == cohorts.FIELDS
        rows = list(reader)
    budgets = sorted({int(r["suspect_tokens"]) for r in rows})
    assert budgets == [3000, 6000]
    # every reported design: the distilled student (1 cohort used) against its ring and against a ring
    # nobody served, and the control distilled from the unfingerprinted teacher; every budget
    groups = {(cohorts.DISTILLED, "1"), (cohorts.OTHER_RING, "1"), (cohorts.PLAIN, "0")}
    assert {(r["design"], r["student"], r["n_used"]) for r in rows} == {(d, *g) for d in cohorts.REPORTED
                                                                         for g in groups}
    assert len(rows) == len(cohorts.REPORTED) * len(groups) * len(budgets)
    at = {(r["design"], r["student"], int(r["suspect_tokens"])): r for r in rows}
    for r in rows:
        n_flagged, n_correct, false = int(r["n_flagged"]), int(r["n_correct"]), int(r["false_flags"])
        assert n_flagged == n_correct + false and 0 < int(r["n_scored"]) <= int(r["suspect_tokens"])
        assert float(r["global_log10_p"]) <= 0
        assert r["detected"] == str(float(r["global_log10_p"]) < cohorts.DETECT_LOG10)
        if r["student"] != cohorts.DISTILLED:
            # the student distilled from the unfingerprinted teacher, and the fingerprinted student
            # against keys it never saw: nothing flagged, nothing near 1e-6
            assert n_flagged == 0 and float(r["global_log10_p"]) > -3, r
            assert int(r["n_expected"]) == 0
    for design in ("keyring", "buckets"):
        strong = at[(design, cohorts.DISTILLED, 6000)]
        # the leaking cohort (its bucket) is detected and named, and no other is
        assert strong["detected"] == "True"
        assert (int(strong["n_expected"]), int(strong["n_flagged"]), int(strong["n_correct"])) == (1, 1, 1), strong
        assert float(strong["weakest_used_log10_p"]) < -6 < -1.5 < float(strong["strongest_other_log10_p"]) + 1.5
        # more suspect tokens, more evidence
        assert float(strong["global_log10_p"]) < float(at[(design, cohorts.DISTILLED, 3000)]["global_log10_p"])
    # the shared detection key sees the leak too
    assert at[("shared+code", cohorts.DISTILLED, 6000)]["detected"] == "True"
    md = (tmp_path / "cohorts.md").read_text()
    assert "Command: `python -m eval.cohorts --smoke --workers 1 --out " in md
    row = next(line for line in md.splitlines() if line.startswith("| keyring | 1 cohort used | 1 |"))
    assert f" {float(at[('keyring', cohorts.DISTILLED, 6000)]['global_log10_p']):.1f} · 1/1 · 1/1 | 3k | 3k |" in row
    assert "Controls: 1 students distilled from the teacher's unfingerprinted answers" in md
    assert ": 0 cohort(s) or bucket(s) flagged; 0 of 12 global tests at p < 1e-6;" in md
    # the summary is a function of the CSV alone: re-rendered from the file, the table is the same
    table = "\n".join(line for line in md.splitlines() if line.startswith("|"))
    again = cohorts.render_markdown(cohorts.read_rows(tmp_path / "cohorts.csv"), cohorts=100, corpus_fraction=0.01,
                                    rho=0.5, code_bits=16, command="x", wall_s=0, cpu_s=0, workers=1)
    assert table and table in again
    assert (tmp_path / "cohorts.png").stat().st_size > 10_000


def test_coded_design_routes_and_scores(teacher):
    """shared+code: the keyed window router splits the windows evenly; text sampled for one cohort
    carries the shared key and that cohort's codeword (its exact tests fire), and its bit values."""
    from fingerprint.sim.distill import corpus_prompts
    from fingerprint.sim.generate import generate
    from fingerprint.verify import text_evidence

    design = cohorts.CodedDesign(5, vocab_size=teacher.vocab_size, n_cohorts=100, bits=16)
    assert design.codewords.shape == (100, 16) and len({c.tobytes() for c in design.codewords}) == 100
    rng = np.random.default_rng(3)
    windows = rng.integers(0, teacher.vocab_size, size=(40_000, 2))
    route = design.route(windows)
    assert np.array_equal(route, design.route(windows))  # a function of the window
    assert abs((route < 0).mean() - 0.5) < 0.02
    assert set(np.unique(route[route >= 0]).tolist()) == set(range(16))
    prompts, _ = corpus_prompts(teacher, 20, length=8, rng=rng)
    answers = generate(teacher.model, prompts, 150, rng, scheme=design.sampler(7))
    tokens = np.concatenate(answers)
    offsets = np.concatenate(([0], np.cumsum([a.size for a in answers])))
    ev = text_evidence(tokens, offsets, context_width=2, vocab_size=teacher.vocab_size)
    detect, per_cohort, bit_lp = design.scores(ev)
    assert detect < -10
    assert int(np.argmin(per_cohort)) == 7 and per_cohort[7] < -10
    code = design.codewords[7]
    used = bit_lp[np.arange(16), code]
    unused = bit_lp[np.arange(16), 1 - code]
    assert np.median(used) < -2 and np.median(unused) > -1.5
