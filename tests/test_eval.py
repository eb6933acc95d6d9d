"""The eval/ experiments run (tiny settings here; the full runs are marked slow)."""

from __future__ import annotations

import csv
import sys

import pytest

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))

from eval import access, neural, power, validity  # noqa: E402


def test_power_experiment_small(tmp_path, teacher):
    assert power.main(["--seeds", "1", "--rhos", "0,0.1", "--budgets", "4000,8000", "--workers", "1",
                       "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "power-greenlist-h2.csv")))
    assert len(rows) == 2 * 2 * 2
    p = {(r["rho"], r["mode"], r["tokens"]): float(r["log10_p"]) for r in rows}
    assert p[("0.1", "text", "8000")] < p[("0.0", "text", "8000")]
    assert p[("0.1", "supervised", "8000")] < -3
    assert (tmp_path / "power-greenlist-h2.png").stat().st_size > 10_000
    assert "text only (baseline" in (tmp_path / "power-greenlist-h2.md").read_text()


def test_access_experiment_small(tmp_path, teacher):
    assert access.main(["--seeds", "1", "--max-tokens", "6000", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "access.csv")))
    assert {r["level"] for r in rows} == {"text", "logprobs", "reading"}
    assert "| logprobs |" in (tmp_path / "access.md").read_text()


def test_validity_experiment_small(tmp_path, teacher):
    validity.main(["--keys", "200", "--tokens", "10000", "--out", str(tmp_path)])
    rows = list(csv.DictReader(open(tmp_path / "validity.csv")))
    assert len(rows) == 2 * len(validity.SETTINGS) * 2
    assert all(float(r["ks_pvalue"]) > 1e-4 for r in rows)
    assert (tmp_path / "validity.png").stat().st_size > 10_000


@pytest.mark.slow
def test_full_evaluations(tmp_path):
    """The runs behind the README's tables (about 40 minutes): `pytest -m slow`."""
    assert validity.main(["--out", str(tmp_path)]) == 0
    assert power.main(["--seeds", "5", "--out", str(tmp_path)]) == 0
    assert access.main(["--seeds", "3", "--out", str(tmp_path)]) == 0
    assert neural.main(["--out", str(tmp_path)]) == 0
