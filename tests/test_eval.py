"""The eval/ experiments run (tiny settings here; the full runs are marked slow), and their numbers
say what the experiments claim: power grows with rho, more access gives smaller p-values, and
innocent text keeps its false-positive rate."""

from __future__ import annotations

import csv
import math
import sys

import pytest

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from eval import access, neural, power, validity  # noqa: E402


def _numbers(rows: list[dict]) -> list[dict]:
    """access.csv rows with their numbers parsed (as ``access.run_seed`` returns them)."""
    return [{**r, "seed": int(r["seed"]), "tokens": int(r["tokens"]), "log10_p": float(r["log10_p"])} for r in rows]


def test_power_experiment_small(tmp_path, teacher):
    budgets = (4000, 8000)
    assert power.main(["--seeds", "1", "--rhos", "0,0.1", "--budgets", ",".join(map(str, budgets)),
                       "--workers", "1", "--corpus-fraction", "0.2", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "power-greenlist-h2.csv")))
    assert len(rows) == 2 * 2 * 2
    p = {(float(r["rho"]), r["mode"], int(r["tokens"])): float(r["log10_p"]) for r in rows}
    n = {(float(r["rho"]), r["mode"], int(r["tokens"])): int(r["n_scored"]) for r in rows}
    for mode in ("text", "supervised"):
        # a student trained on 10% fingerprinted tokens is detected, far beyond the innocent one
        assert p[(0.1, mode, 8000)] < -6 and p[(0.1, mode, 8000)] < p[(0.0, mode, 8000)] - 5
        # more suspect tokens, more evidence
        assert p[(0.1, mode, 8000)] < p[(0.1, mode, 4000)]
        for rho in (0.0, 0.1):
            # the rho = 0 student is not flagged at 1e-3
            if rho == 0.0:
                assert all(p[(rho, mode, b)] > -3 for b in budgets)
            assert 0 < n[(rho, mode, 4000)] < n[(rho, mode, 8000)] <= 8000
    for rho in (0.0, 0.1):
        for b in budgets:
            # the served-window filter only drops tuples; here it drops some
            assert n[(rho, "supervised", b)] < n[(rho, "text", b)]
    # the served windows concentrate the fingerprint: a larger green-rate excess on the same answers
    effect = {(float(r["rho"]), r["mode"], int(r["tokens"])): float(r["effect"]) for r in rows}
    assert effect[(0.1, "supervised", 8000)] > 1.2 * effect[(0.1, "text", 8000)] > 0.02
    assert all(abs(effect[(0.0, mode, b)]) < 0.02 for mode in ("text", "supervised") for b in budgets)
    md = (tmp_path / "power-greenlist-h2.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| text only (baseline") and "| 10.0% |" in line)
    assert f"{p[(0.1, 'text', 8000)]:.1f} [" in row
    assert "below 1e-6: 10.0%." in md


def test_access_experiment_small(tmp_path, teacher):
    assert access.main(["--seeds", "1", "--rho", "0.1", "--max-tokens", "6000", "--corpus-fraction", "0.2",
                        "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "access.csv")))
    assert {r["level"] for r in rows} == set(access.LEVELS)
    by = {level: sorted((int(r["tokens"]), float(r["log10_p"])) for r in rows if r["level"] == level)
          for level in access.LEVELS}
    marks = [t for t, _ in by["text"]]
    assert marks[-1] == 6000 and all([t for t, _ in v] == marks for v in by.values())
    at_budget = {level: v[-1][1] for level, v in by.items()}
    # a student on 10% fingerprinted data: every access level shows it within the budget, and the
    # logprob statistic on the same answers reaches 1e-6 far beyond the text-only test
    assert all(lp < -3 for lp in at_budget.values()), at_budget
    assert at_budget["logprobs"] < -6 and at_budget["logprobs"] < at_budget["text"] - 3, at_budget
    for level, v in by.items():
        assert all(lp <= 0 for _, lp in v)
        assert v[-1][1] < v[0][1]  # more tokens, more evidence
    md = (tmp_path / "access.md").read_text()
    need = {level: access.tokens_needed(_numbers(rows), level, 0) for level in access.LEVELS}
    assert need["logprobs"] <= 6000 and need["logprobs"] <= need["text"]
    for level in access.LEVELS:
        cell = "inf" if math.isinf(need[level]) else f"{need[level]:,.0f}"
        row = next(line for line in md.splitlines() if line.startswith(f"| {level} |"))
        assert row.startswith(f"| {level} | {cell} | {cell} |") and row.endswith(f"| {at_budget[level]:.1f} |")


def test_validity_experiment_small(tmp_path, teacher):
    keys = 120
    assert validity.main(["--keys", str(keys), "--tokens", "10000", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "validity.csv")))
    assert len(rows) == 2 * len(validity.SETTINGS) * 2
    for r in rows:
        fp, fpr = int(r["false_positives"]), float(r["fpr"])
        assert fpr == fp / keys
        # the false-positive rate lies in its 99% binomial interval around alpha
        assert float(r["interval_low"]) <= fpr <= float(r["interval_high"]), r
        assert r["inside"] == "True"
        assert float(r["ks_pvalue"]) > 1e-4
        assert 5000 < int(r["tuples"]) <= 10_000
    # the evidence depends on the text and h only: every scheme at h = 2 tests the same tuples
    for text in ("rho=0 student", "human text"):
        tuples = {r["scheme"]: int(r["tuples"]) for r in rows if r["text"] == text and r["h"] == "2"}
        assert len(tuples) == 3 and len(set(tuples.values())) == 1, tuples


@pytest.mark.slow
def test_full_evaluations(tmp_path):
    """The runs behind the README's tables (about 40 minutes): `pytest -m slow`."""
    assert validity.main(["--out", str(tmp_path)]) == 0
    assert power.main(["--seeds", "5", "--out", str(tmp_path)]) == 0
    assert access.main(["--seeds", "3", "--out", str(tmp_path)]) == 0
    assert neural.main(["--out", str(tmp_path)]) == 0


def test_sequential_smoke(tmp_path):
    """eval/sequential: peeking at a fixed-n p-value inflates the false-positive rate; the
    anytime-valid p-value stays within alpha (smoke size: 2,000 null runs, 50 looks)."""
    import csv

    from eval import sequential

    assert sequential.main(["--null-runs", "2000", "--max-tuples", "50000", "--seeds", "0", "--no-plot",
                            "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "sequential.csv")))
    for stat in {r["statistic"] for r in rows}:
        at = {(r["p_value"], float(r["alpha"])): r for r in rows if r["statistic"] == stat}
        assert float(at[("fixed", 0.01)]["fpr"]) > 0.04  # 50 looks: several times alpha
        for alpha in (0.01, 0.001):
            assert float(at[("anytime", alpha)]["fpr"]) <= float(at[("anytime", alpha)]["ci99_high"])
