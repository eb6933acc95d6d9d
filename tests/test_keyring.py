"""Keyrings: derivation, files, routing of accounts to cohorts, verification against every cohort."""

from __future__ import annotations

import json
import os
import pickle
import stat

import numpy as np
import pytest
from scipy import stats

from fingerprint.errors import KeyFileError, ParameterError
from fingerprint.keyring import Keyring, bucket_ids
from fingerprint.stats import BinomialNull, benjamini_hochberg, holm, sidak_min
from fingerprint.verify import VerifyOptions
from fingerprint.verify.keyring import verify_keyring_tokens


@pytest.fixture(scope="module")
def ring(teacher) -> Keyring:
    return Keyring.from_seed("test-ring", "greenlist", vocab_size=teacher.vocab_size, cohorts=40, delta=3.0)


def _answers(teacher, key, n_tokens: int, seed: int) -> list[np.ndarray]:
    from fingerprint.sim.distill import fingerprinted_responses

    return fingerprinted_responses(teacher, key.scheme_object(), n_tokens, rng=np.random.default_rng(seed)).responses


# ---- keys and files ---------------------------------------------------------------------------
def test_cohort_keys_are_derived_deterministically_and_differ(ring):
    again = Keyring.from_seed("test-ring", "greenlist", vocab_size=ring.vocab_size, cohorts=40, delta=3.0)
    assert again.ring_id == ring.ring_id
    ids = [ring.cohort_key(c).key_id for c in ring.cohorts]
    assert ids == [again.cohort_key(c).key_id for c in again.cohorts]
    assert len(set(ids)) == ring.n_cohorts
    other = Keyring.from_seed("other", "greenlist", vocab_size=ring.vocab_size, cohorts=40, delta=3.0)
    assert not set(ids) & {other.cohort_key(c).key_id for c in other.cohorts}
    key = ring.cohort_key("bucket-0007")
    assert (key.scheme, key.params["delta"], key.vocab_size) == ("greenlist", 3.0, ring.vocab_size)
    decoys = ring.decoy_ids(5, seed=0)
    assert not set(decoys) & set(ring.cohorts)
    assert ring.decoy_cohort_key(decoys[0]).key_id not in ids
    with pytest.raises(ParameterError, match="no cohort 'bucket-9999'"):
        ring.cohort_key("bucket-9999")


def test_keyring_file_round_trip_permissions_and_tampering(ring, tmp_path):
    path = ring.save(tmp_path / "ring.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    assert "master" in text and "secret" not in text
    loaded = Keyring.load(path)
    assert loaded.ring_id == ring.ring_id and loaded.cohorts == ring.cohorts and loaded.assign == "hash"
    assert loaded.cohort_key("bucket-0003") == ring.cohort_key("bucket-0003")
    assert "master=<hidden>" in repr(loaded) and json.loads(text)["master"] not in repr(loaded)
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(loaded)
    with pytest.raises(KeyFileError, match="refuses|exists|overwrite"):
        ring.save(path)
    data = json.loads(text)
    data["cohorts"][0] = "bucket-attacker"  # an edit of the cohort list without the master
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    os.chmod(edited, 0o600)
    with pytest.raises(KeyFileError, match="field 'mac' does not match"):
        Keyring.load(edited)
    data = json.loads(text)
    data["format"] = "fingerprint-key"
    edited.write_text(json.dumps(data))
    with pytest.raises(KeyFileError, match="use --key"):
        Keyring.load(edited)


def test_cohort_ids_are_validated_with_their_position():
    with pytest.raises(ParameterError, match="'a' appears twice"):
        Keyring.from_seed(1, "greenlist", vocab_size=100, cohorts=["a", "b", "a"])
    with pytest.raises(ParameterError, match="reserved for decoy"):
        Keyring.from_seed(1, "greenlist", vocab_size=100, cohorts=["a", "~x"])
    with pytest.raises(ParameterError, match="id 1"):
        Keyring.from_seed(1, "greenlist", vocab_size=100, cohorts=["a", ""])
    with pytest.raises(ParameterError, match=">= 1"):
        bucket_ids(0)


def test_accounts_map_to_cohorts():
    exact = Keyring.from_seed(2, "greenlist", vocab_size=100, cohorts=["acme", "globex", "initech"])
    assert exact.assign == "exact" and exact.cohort_for("globex") == "globex"
    with pytest.raises(ParameterError, match="not a cohort"):
        exact.cohort_for("mallory")
    hashed = Keyring.from_seed(2, "greenlist", vocab_size=100, cohorts=10)
    assert hashed.cohort_for("bucket-0004") == "bucket-0004"
    accounts = [f"acct-{i}" for i in range(20_000)]
    buckets = [hashed.cohort_for(a) for a in accounts]
    assert buckets == [hashed.cohort_for(a) for a in accounts]  # deterministic
    counts = np.array([buckets.count(b) for b in hashed.cohorts])
    assert stats.chisquare(counts).pvalue > 1e-4  # uniform over the buckets
    other = Keyring.from_seed(3, "greenlist", vocab_size=100, cohorts=10)
    agree = np.mean([hashed.cohort_for(a)[-1] == other.cohort_for(a)[-1] for a in accounts[:2000]])
    assert agree < 0.2  # keyed by the master: another ring buckets the same accounts differently


# ---- multiple testing -----------------------------------------------------------------------
def test_corrections_match_their_definitions():
    p = np.array([0.001, 0.2, 0.01, 0.03, 0.5, 0.04])
    m = p.size
    order = np.argsort(p)
    bh = np.empty(m)
    bh[order] = np.minimum.accumulate((p[order] * m / np.arange(1, m + 1))[::-1])[::-1]
    np.testing.assert_allclose(10 ** benjamini_hochberg(np.log10(p)), np.minimum(bh, 1), rtol=1e-12)
    assert np.all(holm(np.log10(p)) >= benjamini_hochberg(np.log10(p)) - 1e-12)  # FWER is the stricter
    assert sidak_min(np.log10(p)) == pytest.approx(np.log10(1 - (1 - 0.001) ** m), rel=1e-12)
    assert sidak_min(np.array([-400.0, -1.0])) == pytest.approx(-400 + np.log10(2))  # past float range


def test_vectorized_binomial_tests_equal_the_single_test():
    null = BinomialNull(3000, 0.25)
    totals = np.array([0, 1, 700, 750, 812, 900, 2999, 3000], dtype=float)
    for fast, slow in zip(null.tests(totals), (null.test(t) for t in totals)):
        assert fast.log10_pvalue == slow.log10_pvalue
        assert fast.effect.ci_low == pytest.approx(slow.effect.ci_low, abs=1e-9)
        assert fast.effect.ci_high == pytest.approx(slow.effect.ci_high, abs=1e-9)


# ---- verification ---------------------------------------------------------------------------
def test_the_cohorts_whose_outputs_were_read_are_named(teacher, ring):
    used = ["bucket-0003", "bucket-0021"]
    texts = [t for i, c in enumerate(used) for t in _answers(teacher, ring.cohort_key(c), 4000, seed=i)]
    r = verify_keyring_tokens(texts, ring=ring, options=VerifyOptions(n_decoys=50))
    assert r.verdict == "detected" and r.global_log10_pvalue < -10
    assert set(r.flagged) == set(used)
    assert {c.cohort for c in r.cohorts[:2]} == set(used)
    assert r.decoys is not None and r.decoys.passed
    top = r.cohort("bucket-0003")
    assert top.test.effect.ci_low > 0 and top.holm_log10_pvalue < -6
    bh = verify_keyring_tokens(texts, ring=ring, options=VerifyOptions(n_decoys=0), correction="bh")
    assert set(bh.flagged) >= set(used)


def test_human_text_flags_no_cohort(teacher, ring, human_text):
    tokens, offsets = human_text
    r = verify_keyring_tokens(tokens, offsets, ring=ring, options=VerifyOptions(n_decoys=50, alpha=1e-3))
    assert r.verdict == "not detected" and r.flagged == ()
    assert r.global_log10_pvalue > -3
    assert r.decoys is not None and r.decoys.passed
    assert len(r.cohorts) == ring.n_cohorts
    assert [c.test.log10_pvalue for c in r.cohorts] == sorted(c.test.log10_pvalue for c in r.cohorts)


def test_identification_ignores_prompt_windows(teacher, ring):
    """A suspect that merely repeats a cohort's fingerprinted prompt is not evidence: prompt windows
    are excluded before any cohort key scores."""
    texts = _answers(teacher, ring.cohort_key("bucket-0011"), 2000, seed=5)
    r = verify_keyring_tokens(texts, ring=ring, prompt_tokens=texts, options=VerifyOptions(n_decoys=0))
    assert r.counts.scored == 0 and r.counts.dropped["prompt_window"] > 0
    assert r.flagged == () and r.verdict == "insufficient data" and r.global_log10_pvalue == 0.0


def test_keyring_refuses_what_it_cannot_do(ring):
    with pytest.raises(ParameterError, match="mode 'text'"):
        verify_keyring_tokens([np.arange(50)], ring=ring, options=VerifyOptions(mode="logprobs"))
    with pytest.raises(ParameterError, match="correction"):
        verify_keyring_tokens([np.arange(50)], ring=ring, correction="bonferroni")


def test_forked_scoring_gives_the_same_totals(human_text):
    """Many cohort keys are split over forked processes; the totals must not change."""
    from fingerprint.verify.evidence import text_evidence
    from fingerprint.verify.keyring import cohort_totals

    tokens, offsets = human_text
    ev = text_evidence(tokens[:5000], np.array([0, 5000]), context_width=2, vocab_size=8192)
    keys = Keyring.from_seed(4, "greenlist", vocab_size=8192, cohorts=1200).cohort_keys()
    serial, _ = cohort_totals(ev, keys, processes=1)
    forked, _ = cohort_totals(ev, keys, processes=2)
    np.testing.assert_array_equal(serial, forked)
    assert serial.std() > 0 and abs(serial.mean() / len(ev) - 0.25) < 0.01
