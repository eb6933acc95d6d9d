"""Verification at scale: directories, Parquet and Dask give the single-process report exactly.

The corpus mixes a JSONL file and Parquet files of several row groups (so partitions are files
and row groups), fingerprinted and plain responses, responses repeated across partitions (global
de-duplication must see them) and prompts that share windows with their responses (the
prompt-window rule). Two keys of different context widths (Holm) and decoys run every time.
"""

from __future__ import annotations

import importlib
import json
import os
import signal

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("distributed")

from fingerprint.cli import main  # noqa: E402
from fingerprint.errors import InputError, ParameterError  # noqa: E402
from fingerprint.keys import FingerprintKey  # noqa: E402
from fingerprint.scale.cluster import connect  # noqa: E402
from fingerprint.scale.engine import verify_partitions  # noqa: E402
from fingerprint.scale.sources import Columns, expand_inputs, plan_partitions, read_corpus  # noqa: E402
from fingerprint.sim.generate import generate  # noqa: E402
from fingerprint.verify import VerifyOptions, verify_exchanges  # noqa: E402

#: Report fields that may differ between two runs on the same input.
VOLATILE = ("created_at", "engine")


@pytest.fixture(scope="module")
def corpus(teacher, tmp_path_factory):
    d = tmp_path_factory.mktemp("scale")
    keys = [FingerprintKey(bytes(range(3, 35)), "greenlist", {"delta": 3.0, "context_width": 2}, teacher.vocab_size),
            FingerprintKey(bytes(range(40, 72)), "tournament", {"context_width": 1}, teacher.vocab_size)]
    for i, k in enumerate(keys):
        k.save(d / f"key{i}.json")
    rng = np.random.default_rng(7)
    prompts = [teacher.tokenizer.encode_batch([p])[0][:8] for p in teacher.paragraphs[200:260]]
    marked = generate(teacher.model, prompts[:30], 60, rng, scheme=keys[0].scheme_object())
    plain = generate(teacher.model, prompts[30:], 60, rng)
    dec = teacher.tokenizer.decode
    rows = [{"id": f"r{i}", "prompt": dec(p), "response": dec(r)}
            for i, (p, r) in enumerate(zip(prompts, list(marked) + list(plain)))]
    rows += [{"id": "dup-a", "prompt": "", "response": rows[3]["response"]},  # repeats across partitions
             {"id": "echo", "prompt": rows[5]["response"], "response": rows[5]["response"]}]  # prompt windows
    rng.shuffle(rows)  # type: ignore[arg-type]
    (d / "in").mkdir()
    with open(d / "in" / "a.jsonl", "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows[:20])
    pq.write_table(pa.Table.from_pylist(rows[20:45]), d / "in" / "b.parquet", row_group_size=7)
    chat = [{"id": r["id"], "messages": [{"role": "user", "content": r["prompt"]}], "response": r["response"]}
            for r in rows[45:]]
    pq.write_table(pa.Table.from_pylist(chat), d / "c-chat.parquet", row_group_size=5)
    with open(d / "served.jsonl", "w") as fh:
        fh.writelines(json.dumps({"response": dec(r)}) + "\n" for r in marked[:20])
    return d, keys, rows


def _report(argv: list[str], path) -> dict:
    assert main(argv + ["--json", str(path), "--quiet"]) == 0
    doc = json.loads(path.read_text())
    for k in VOLATILE:
        doc.pop(k)
    return doc


def _argv(d, teacher, *inputs) -> list[str]:
    return ["verify", *map(str, inputs), "--key", str(d / "key0.json"), "--key", str(d / "key1.json"),
            "--tokenizer", teacher.tokenizer.source, "--decoys", "30"]


def test_partitions_are_files_and_row_groups(corpus):
    d, _, rows = corpus
    paths = expand_inputs([d / "in", str(d / "c-*.parquet")])
    assert [os.path.basename(p) for p in paths] == ["a.jsonl", "b.parquet", "c-chat.parquet"]
    parts = plan_partitions(paths)
    assert [p.kind for p in parts] == ["records"] + ["parquet"] * 4 + ["parquet"] * 4  # 25 rows by 7, 17 by 5
    assert [p.first_row for p in parts if p.path.endswith("b.parquet")] == [0, 7, 14, 21]
    with pytest.raises(InputError, match="matches no file"):
        expand_inputs([str(d / "nothing-*.jsonl")])
    with pytest.raises(InputError, match="given twice"):
        expand_inputs([d / "in", d / "in" / "a.jsonl"])


def test_parquet_reads_as_the_same_texts(corpus, teacher):
    d, _, rows = corpus
    plain, _ = read_corpus([d / "in"])
    assert [e.id for e in plain.exchanges.exchanges] == [r["id"] for r in rows[:45]]
    assert [e.response for e in plain.exchanges.exchanges] == [r["response"] for r in rows[:45]]
    assert [f.format for f in plain.exchanges.files] == ["exchanges", "parquet"]
    assert plain.exchanges.files[1].records == 25
    chat, _ = read_corpus([d / "c-chat.parquet"], Columns(messages="messages"))
    assert [e.prompt for e in chat.exchanges.exchanges] == [r["prompt"] for r in rows[45:]]
    with pytest.raises(InputError, match="column 'answer' missing"):
        read_corpus([d / "c-chat.parquet"], Columns(response="answer", messages="messages"))


def test_dask_report_equals_single_process(corpus, teacher, tmp_path):
    """Two worker processes and one process: the same report, every number and count; with raw
    served outputs (the window filter) too."""
    d, keys, rows = corpus
    base = _argv(d, teacher, d / "in")
    single = _report(base, tmp_path / "single.json")
    scaled = _report(base + ["--dask", "local:2"], tmp_path / "dask.json")
    assert scaled == single
    r0 = single["results"][0]
    assert r0["verdict"] == "detected" and single["holm_applied"]
    assert r0["dropped"]["duplicate_tuple"] > 0 and r0["dropped"]["prompt_window"] > 0
    # the same corpus as one JSONL file, through the unchanged path: the same statistics
    one = tmp_path / "all.jsonl"
    one.write_text("".join(json.dumps(r) + "\n" for r in rows[:45]))
    ref = verify_exchanges(read_corpus([one])[0].exchanges, teacher.tokenizer, keys,
                           options=VerifyOptions(n_decoys=30)).results
    assert [r.test.log10_pvalue for r in ref] == [r["log10_pvalue"] for r in single["results"]]
    assert [r.counts.scored for r in ref] == [r["n_scored"] for r in single["results"]]
    served = ["--served", str(d / "served.jsonl")]
    s_single = _report(base + served, tmp_path / "s-single.json")
    s_scaled = _report(base + served + ["--dask", "local:2"], tmp_path / "s-dask.json")
    assert s_scaled == s_single and s_single["window_filter_windows"] > 0
    assert s_single["results"][0]["dropped"]["window_filter"] > 0
    # the served-window index (built on Dask) gives the same filter, in both engines
    idx = tmp_path / "served.idx"
    assert main(["index", "build", str(d / "served.jsonl"), "--out", str(idx), "--tokenizer", teacher.tokenizer.source,
                 "--vocab-size", str(teacher.vocab_size), "-H", "1", "-H", "2", "--dask", "local:2", "--quiet"]) == 0
    i_single = _report(base + ["--served", str(idx)], tmp_path / "i-single.json")
    i_scaled = _report(base + ["--served", str(idx), "--dask", "local:2", "--worker-memory", "1GiB"],
                       tmp_path / "i-dask.json")
    assert i_scaled == i_single
    assert i_single["inputs"]["served"][0]["format"] == "served-window index"
    for doc in (i_single, s_single):
        doc["inputs"].pop("served")
        doc.pop("custody", None)  # the served inputs' custody lines (an index has no hash chain)
    assert i_single == s_single


def test_a_killed_worker_changes_nothing(corpus, teacher, tmp_path):
    """A worker killed (SIGKILL) while partitions are in flight: Dask reruns its tasks on the
    others (and on the restarted one), and the result is unchanged."""
    d, keys, rows = corpus
    small = tmp_path / "small-groups.parquet"
    pq.write_table(pa.Table.from_pylist(rows), small, row_group_size=2)  # 31 partitions
    options = VerifyOptions(n_decoys=10)
    ref = verify_partitions([str(small)], keys, teacher.tokenizer, options=options)
    with connect("local:2") as engine:
        pids = engine.client.run(os.getpid)
        killed: list[int] = []

        def kill_one(msg: str) -> None:
            if msg.startswith("partitions:") and not killed:  # the first result is in
                busy = [w for w, tasks in engine.client.processing().items() if tasks]
                assert busy, "no partition in flight when the worker was to be killed"
                os.kill(pids[busy[0]], signal.SIGKILL)
                killed.append(pids[busy[0]])

        got = verify_partitions([str(small)], keys, teacher.tokenizer, options=options, engine=engine,
                                progress=kill_one)
    assert killed and got.partitions == 31
    for a, b in zip(ref.result.results, got.result.results):
        assert a.test == b.test and a.counts == b.counts and a.trajectory == b.trajectory
        assert a.decoys is not None and b.decoys is not None
        assert np.array_equal(a.decoys.log10_pvalues, b.decoys.log10_pvalues)


def test_bad_engine_and_mode(corpus, teacher, capsys):
    d, keys, _ = corpus
    assert main(_argv(d, teacher, d / "in") + ["--dask", "yarn"]) == 2
    assert "expected local, local:N" in capsys.readouterr().err
    for extra, said in ((["--worker-memory", "2GiB"], "needs --dask"),
                        (["--dask", "local:2", "--worker-memory", "lots"], "not a size"),
                        (["--dask", "tcp://127.0.0.1:1", "--worker-memory", "2GiB"], "dask worker --memory-limit")):
        assert main(_argv(d, teacher, d / "in") + extra) == 2
        assert said in capsys.readouterr().err
    with pytest.raises(ParameterError, match="mode text"):
        verify_partitions([str(d / "in")], keys, teacher.tokenizer, options=VerifyOptions(mode="logprobs"))


@pytest.mark.parametrize("scheme, params", [("greenlist", {"delta": 3.0}), ("gumbel", {}), ("tournament", {})])
def test_decoys_by_slices_equal_decoys_on_the_whole(teacher, human_text, monkeypatch, scheme, params):
    """Decoy statistics summed slice by slice (what a worker computes) equal the per-decoy
    computation on the whole evidence: exactly for counts, to float rounding for Gumbel scores;
    and slices of any size give the same numbers."""
    pl = importlib.import_module("fingerprint.verify.pipeline")
    from fingerprint.verify import text_evidence, verify_evidence

    tokens, offsets = human_text
    key = FingerprintKey(bytes(range(9, 41)), scheme, params, teacher.vocab_size)
    ev = text_evidence(tokens, offsets, context_width=key.scheme_object().context_width, vocab_size=key.vocab_size)
    opts = VerifyOptions(n_decoys=30, decoy_seed=3)
    results = []
    for size in (1 << 21, 4096, 777):
        monkeypatch.setattr(pl, "DECOY_SLICE_ITEMS", size)
        results.append(verify_evidence(ev, key, options=opts).results[0])
    monkeypatch.setattr(pl, "_sliceable", lambda *a: False)  # the whole-evidence path
    whole = verify_evidence(ev, key, options=opts).results[0]
    for r in results:
        assert r.decoys is not None and whole.decoys is not None
        np.testing.assert_allclose(r.decoys.log10_pvalues, whole.decoys.log10_pvalues, rtol=1e-12,
                                   atol=0 if scheme != "gumbel" else 1e-12)
        if scheme != "gumbel":
            assert np.array_equal(r.decoys.log10_pvalues, whole.decoys.log10_pvalues)
        for a, b in zip(r.trajectory, whole.trajectory):
            assert a.decoy_median == pytest.approx(b.decoy_median, rel=1e-12, abs=1e-12)


def test_hash_bucket_merge_equals_merge(corpus, teacher):
    """The hash-partitioned global de-duplication (each partition's ids split by bucket, one
    de-duplication per bucket, each partition keeping what the buckets kept) builds the
    evidence ``merge`` builds from the partitions' own evidence, array for array, whatever the
    number of buckets."""
    from fingerprint.scale.engine import (Assembly, dedup_bucket, kept_items, merged_evidence, partition_buckets,
                                          partition_evidence)
    from fingerprint.verify import merge, placed_at

    d, keys, _ = corpus
    parts = plan_partitions(expand_inputs([d / "in"]))  # a JSONL file and 4 Parquet row groups
    args = (Columns(), str(teacher.tokenizer.source), None, [1, 2], teacher.vocab_size, None, False)
    whole = [partition_evidence(p, *args) for p in parts]
    text_start = np.concatenate(([0], np.cumsum([pe.n_texts for pe in whole])))
    token_start = np.concatenate(([0], np.cumsum([pe.n_tokens for pe in whole])))
    for n_buckets in (1, 2, 5, 64):
        mapped = [partition_buckets(p, *args, n_buckets) for p in parts]
        metas = [m[0] for m in mapped]
        assert all(len(ev) == 0 for m in metas for ev in m.evidence.values())
        buckets = [dedup_bucket([m[1][b] for m in mapped]) for b in range(n_buckets)]
        kept = [kept_items(m, buckets, j, int(text_start[j]), int(token_start[j])) for j, m in enumerate(mapped)]
        assembly = Assembly()  # finishes arriving in any order (here: last first)
        assert assembly.start(metas) == [(int(a), int(b)) for a, b in zip(text_start[:-1], token_start[:-1])]
        for j in reversed(range(len(kept))):
            assembly.add(j, dict(kept[j]))
        for h in (1, 2):
            ref = merge(*[placed_at(pe.evidence[h], int(text_start[j]), int(token_start[j]))
                          for j, pe in enumerate(whole)])
            for ev in (merged_evidence(metas, kept, h), assembly.evidence(h)):
                assert ref.counts == ev.counts and ref.counts.dropped["duplicate_tuple"] > 0
                for name in ("blocks", "dedup_ids", "positions", "text_index", "text_tokens", "text_numbers"):
                    a, b = getattr(ref, name), getattr(ev, name)
                    assert a.dtype == b.dtype and np.array_equal(a, b), name
                assert (ref.text_ids, ref.text_start, ref.token_start, ref.weights) == (
                    ev.text_ids, ev.text_start, ev.token_start, ev.weights)


def _same_results(a, b) -> None:
    """Two verify results equal field by field (arrays element by element)."""
    assert (a.n_texts, a.n_tokens, a.holm_applied, a.notes) == (b.n_texts, b.n_tokens, b.holm_applied, b.notes)
    for x, y in zip(a.results, b.results, strict=True):
        assert (x.test, x.holm_log10_pvalue, x.anytime_log10_pvalue, x.counts, x.bayes, x.sufficiency,
                x.trajectory, x.verdict, x.reason) == (y.test, y.holm_log10_pvalue, y.anytime_log10_pvalue,
                                                       y.counts, y.bayes, y.sufficiency, y.trajectory, y.verdict,
                                                       y.reason)
        assert x.decoys is not None and y.decoys is not None
        assert np.array_equal(x.decoys.log10_pvalues, y.decoys.log10_pvalues)
        assert x.decoys.ks_pvalue == y.decoys.ks_pvalue and x.decoys.empirical_pvalue == y.decoys.empirical_pvalue
        assert x.responses.ids == y.responses.ids
        for f in ("n_tokens", "n_scored", "statistic", "log10_pvalue"):
            assert np.array_equal(getattr(x.responses, f), getattr(y.responses, f)), f


@pytest.mark.parametrize("grid", [1 << 17, 40])
def test_scores_summed_per_partition_equal_the_whole_evidence(corpus, teacher, tmp_path, monkeypatch, grid):
    """Keys whose item scores are integers are scored where each partition's kept tuples are,
    and only sums travel: the result equals the whole evidence's, every number (the test, the
    anytime p-value on a coarse e-process grid too, the trajectory, decoys, per-response scores).
    A Gumbel key (real-valued scores) brings the tuples to the driver instead."""
    pl = importlib.import_module("fingerprint.verify.pipeline")
    monkeypatch.setattr(pl, "EPROCESS_TIMES", grid)
    d, keys, rows = corpus
    small = tmp_path / "small-groups.parquet"
    pq.write_table(pa.Table.from_pylist(rows), small, row_group_size=3)
    one = tmp_path / "all.jsonl"
    one.write_text("".join(json.dumps(r) + "\n" for r in rows))
    gumbel = FingerprintKey(bytes(range(80, 112)), "gumbel", {"context_width": 1}, teacher.vocab_size)
    for ks, summed in ((keys, True), ([gumbel, keys[0]], False)):
        assert [pl.sums_are_exact(k) for k in ks] == [True, True] if summed else [False, True]
        options = VerifyOptions(n_decoys=12, decoy_seed=5)
        said: list[str] = []
        got = verify_partitions([str(small)], ks, teacher.tokenizer, options=options, progress=said.append).result
        assert any(m.startswith("combining") for m in said) == summed
        assert any(m.startswith("merging partition evidence") for m in said) != summed
        ref = verify_exchanges(read_corpus([one])[0].exchanges, teacher.tokenizer, ks, options=options)
        _same_results(got, ref)
    with pytest.raises(ParameterError, match="not a sum of integer"):
        pl.verify_sums([], [[]], [gumbel])
