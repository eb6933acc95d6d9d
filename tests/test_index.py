"""The served-window index: built out of core (in this process or on Dask, in generations), it
holds exactly the window set ``WindowFilter.from_tokens`` builds in memory from the same served
responses; a failed build leaves the previous index valid; the CLI builds and describes it."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

import fingerprint.scale.index as index_mod
from fingerprint.cli import main
from fingerprint.errors import InputError, ParameterError
from fingerprint.scale.index import WindowIndex, bucket_of, build_index, is_index
from fingerprint.scale.sources import Columns, plan_partitions
from fingerprint.windows import WindowFilter, tuple_table

WIDTHS = (0, 1, 2, 4)


@pytest.fixture(scope="module")
def texts(teacher) -> dict[str, list[str]]:
    """Short English paragraphs (about 35 tokens each): two served sets and a query set that
    overlaps the first (so it has windows both in and out of the index)."""
    paras = teacher.paragraphs
    return {"a": paras[3000:3300], "b": paras[3300:3500], "query": paras[3200:3400] + paras[5000:5200]}


def write_jsonl(path: Path, texts: list[str], prefix: str) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for i, t in enumerate(texts):
            fh.write(json.dumps({"id": f"{prefix}-{i}", "response": t}) + "\n")
    return path


def write_files(folder: Path, texts: list[str], n: int, prefix: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    step = -(-len(texts) // n)
    return [write_jsonl(folder / f"{prefix}{k}.jsonl", texts[k * step:(k + 1) * step], f"{prefix}{k}")
            for k in range(n)]


def assert_same_set(index: WindowIndex, teacher, served: list[str], query: list[str], widths=WIDTHS) -> None:
    """The index equals WindowFilter.from_tokens on the served responses: same size, same answers
    on the windows of the query texts (among which members and non-members both occur)."""
    tok, vocab = teacher.tokenizer, teacher.tokenizer.vocab_size
    s_tokens, s_offsets = tok.encode_batch(served)
    q_tokens, q_offsets = tok.encode_batch(query)
    for h in widths:
        ref = WindowFilter.from_tokens(s_tokens, s_offsets, h, vocab_size=vocab)
        got = index.window_filter(h, vocab)
        assert isinstance(got, WindowFilter) and got.context_width == h
        assert len(got) == len(ref) == index.n_windows(h)
        ids = tuple_table(q_tokens, q_offsets, h, vocab_size=vocab).window_ids
        want = ref.contains(ids)
        np.testing.assert_array_equal(got.contains(ids), want)
        if h == 0:
            assert want.all() and len(ref) == 1
        else:
            assert want.any() and not want.all()
            assert not got.contains(np.array([np.uint64(2**64 - 1)], dtype=np.uint64))[0]


# ---- (1) JSONL, in this process -----------------------------------------------------------------

def test_jsonl_index_equals_window_filter(tmp_path, teacher, texts):
    files = write_files(tmp_path / "served", texts["a"], 3, "a")
    idx = build_index(files, tmp_path / "a.idx", vocab_size=teacher.tokenizer.vocab_size, widths=WIDTHS,
                      tokenizer=teacher.tokenizer, buckets=16)
    assert is_index(tmp_path / "a.idx") and not is_index(tmp_path / "served")
    assert idx.widths == WIDTHS and idx.buckets == 16 and len(idx.generations) == 1
    assert [Path(s["path"]).name for s in idx.sources] == ["a0.jsonl", "a1.jsonl", "a2.jsonl"]
    assert sum(s["records"] for s in idx.sources) == len(texts["a"])
    assert sum(s["tokens"] for s in idx.sources) == teacher.tokenizer.encode_batch(texts["a"])[1][-1]
    manifest = json.loads((tmp_path / "a.idx" / "manifest.json").read_text())
    assert manifest["format"] == "fingerprint-window-index" and manifest["version"] == 1
    assert len(manifest["tokenizer_sha256"]) == 64
    assert_same_set(WindowIndex.open(tmp_path / "a.idx"), teacher, texts["a"], texts["query"])
    for h in (1, 2, 4):  # every shard sorted, distinct, in its own bucket
        for path in idx.shard_paths(h):
            ids = np.load(path)
            assert ids.dtype == np.uint64 and (np.diff(ids) > 0).all()
            assert (bucket_of(ids, 16) == int(path.stem.split("-b")[1])).all()


def test_reader_refuses_what_it_cannot_answer(tmp_path, teacher, texts):
    vocab = teacher.tokenizer.vocab_size
    files = write_files(tmp_path / "served", texts["a"][:50], 1, "a")
    idx = build_index(files, tmp_path / "x.idx", vocab_size=vocab, widths=[2], tokenizer=teacher.tokenizer,
                      buckets=4)
    with pytest.raises(ParameterError, match="vocab_size"):
        idx.window_filter(2, vocab + 1)
    with pytest.raises(ParameterError, match="width 3 is not indexed"):
        idx.window_filter(3, vocab)
    filt = idx.window_filter(2, vocab)
    again = pickle.loads(pickle.dumps(filt))  # what Dask sends: the path, not the ids
    assert len(pickle.dumps(filt)) < 1000 and len(again) == len(filt)
    probe = np.load(idx.shard_paths(2)[0])
    assert again.contains(probe).all()
    with pytest.raises(InputError, match="not a served-window index"):
        WindowIndex.open(tmp_path / "served")
    idx.shard_paths(2)[1].unlink()
    with pytest.raises(InputError, match="shard missing"):
        WindowIndex.open(tmp_path / "x.idx")
    (tmp_path / "x.idx" / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        WindowIndex.open(tmp_path / "x.idx")


# ---- (2) Parquet, several row groups; text and token ids ----------------------------------------

def test_parquet_row_groups_give_the_same_set(tmp_path, teacher, texts):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    tok, vocab = teacher.tokenizer, teacher.tokenizer.vocab_size
    served = texts["a"]
    path = tmp_path / "served.parquet"
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(len(served))], "text": served}), path,
                   row_group_size=70)
    assert len(plan_partitions([str(path)])) == 5
    idx = build_index([path], tmp_path / "text.idx", vocab_size=vocab, widths=WIDTHS, tokenizer=tok,
                      columns=Columns(response="text"), buckets=8)
    assert_same_set(idx, teacher, served, texts["query"])

    tokens, offsets = tok.encode_batch(served)
    rows = [tokens[offsets[i]:offsets[i + 1]].tolist() for i in range(len(served))]
    ids_path = tmp_path / "ids.parquet"
    pq.write_table(pa.table({"ids": rows}), ids_path, row_group_size=120)
    by_ids = build_index([ids_path], tmp_path / "ids.idx", vocab_size=vocab, widths=WIDTHS,
                         columns=Columns(response=None, tokens="ids"), buckets=8)
    assert by_ids.tokenizer_sha256 is None
    for h in WIDTHS:
        assert [p.read_bytes() for p in by_ids.shard_paths(h)] == [p.read_bytes() for p in idx.shard_paths(h)]
    with pytest.raises(ParameterError, match="smaller than the tokenizer's"):
        build_index([path], tmp_path / "small.idx", vocab_size=1000, widths=[1], tokenizer=tok,
                    columns=Columns(response="text"))
    small = tmp_path / "bad.idx"
    with pytest.raises(InputError, match="outside the vocabulary"):
        build_index([ids_path], small, vocab_size=int(tokens.max()), widths=[1],
                    columns=Columns(response=None, tokens="ids"))
    assert not is_index(small)


# ---- (3) generations ----------------------------------------------------------------------------

def test_append_adds_a_generation_and_refuses_mismatches(tmp_path, teacher, texts):
    tok, vocab = teacher.tokenizer, teacher.tokenizer.vocab_size
    a_files = write_files(tmp_path / "a", texts["a"], 2, "a")
    b_files = write_files(tmp_path / "b", texts["b"] + texts["a"][:40], 2, "b")  # some windows already indexed
    out = tmp_path / "s.idx"
    first = build_index(a_files, out, vocab_size=vocab, widths=(1, 2, 4), tokenizer=tok, buckets=8)
    with pytest.raises(InputError, match="already a served-window index"):
        build_index(b_files, out, vocab_size=vocab, widths=(1, 2, 4), tokenizer=tok, buckets=8)
    idx = build_index([tmp_path / "b"], out, vocab_size=vocab, widths=(1, 2, 4), tokenizer=tok, buckets=8,
                      append=True)
    assert [g.number for g in idx.generations] == [0, 1]
    assert_same_set(idx, teacher, texts["a"] + texts["b"], texts["query"], widths=(1, 2, 4))
    for h in (1, 2, 4):
        assert idx.n_windows(h) == first.n_windows(h) + idx.generations[1].windows[h]
        old = np.concatenate([np.load(p) for p in first.shard_paths(h)])
        new = np.concatenate([np.load(p) for p in idx.shard_paths(h)[idx.buckets:]])
        assert not np.isin(new, old).any()

    with pytest.raises(InputError, match=r"a1\.jsonl: already indexed"):
        build_index([a_files[1]], out, vocab_size=vocab, widths=(1, 2, 4), tokenizer=tok, buckets=8, append=True)
    c = write_jsonl(tmp_path / "c.jsonl", texts["query"][:10], "c")
    for kwargs, message in [({"vocab_size": vocab + 1}, "vocab_size 8192, this build 8193"),
                            ({"widths": (1, 2)}, "context widths"),
                            ({"buckets": 16}, "buckets")]:
        args = {"vocab_size": vocab, "widths": (1, 2, 4), "tokenizer": tok, "buckets": 8, **kwargs}
        with pytest.raises(ParameterError, match=message):
            build_index([c], out, append=True, **args)
    assert len(WindowIndex.open(out).generations) == 2
    with pytest.raises(InputError, match="no index to append to"):
        build_index([c], tmp_path / "none.idx", vocab_size=vocab, widths=[1], tokenizer=tok, append=True)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        build_index([c], tmp_path / "busy", vocab_size=vocab, widths=[1], tokenizer=tok)


# ---- (4) a build that dies ----------------------------------------------------------------------

def test_a_failed_build_leaves_the_index_valid(tmp_path, teacher, texts, monkeypatch):
    tok, vocab = teacher.tokenizer, teacher.tokenizer.vocab_size
    a_files = write_files(tmp_path / "a", texts["a"], 2, "a")
    b_files = write_files(tmp_path / "b", texts["b"], 2, "b")
    out = tmp_path / "s.idx"
    build_index(a_files, out, vocab_size=vocab, widths=(1, 2), tokenizer=tok, buckets=8)
    manifest = (out / "manifest.json").read_bytes()

    real_merge = index_mod.merge_bucket
    calls = []

    def dies_midway(job):
        calls.append(job)
        if len(calls) > 5:
            raise RuntimeError("worker killed")
        return real_merge(job)

    monkeypatch.setattr(index_mod, "merge_bucket", dies_midway)
    monkeypatch.setattr(index_mod, "_discard_generation", lambda root, number: None)  # as if killed outright
    with pytest.raises(RuntimeError, match="worker killed"):
        build_index(b_files, out, vocab_size=vocab, widths=(1, 2), tokenizer=tok, buckets=8, append=True)
    assert (out / "manifest.json").read_bytes() == manifest
    assert (out / "g00001").is_dir() and (out / "building-g00001").is_dir()  # the dead build's leftovers
    assert_same_set(WindowIndex.open(out), teacher, texts["a"], texts["query"], widths=(1, 2))

    monkeypatch.setattr(index_mod, "merge_bucket", real_merge)
    messages: list[str] = []
    idx = build_index(b_files, out, vocab_size=vocab, widths=(1, 2), tokenizer=tok, buckets=8, append=True,
                      progress=messages.append)
    assert any("g00001" in m and "building-g00001" in m for m in messages if m.startswith("removed"))
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["g00000", "g00001",
                                                                                    "manifest.json"]
    assert_same_set(idx, teacher, texts["a"] + texts["b"], texts["query"], widths=(1, 2))

    monkeypatch.undo()
    c = write_jsonl(tmp_path / "c.jsonl", texts["query"][:20], "c")

    def bad_partition(*args, **kwargs):
        raise InputError("c.jsonl line 3: unreadable")

    monkeypatch.setattr(index_mod, "index_partition", bad_partition)
    with pytest.raises(InputError, match="line 3"):
        build_index([c], out, vocab_size=vocab, widths=(1, 2), tokenizer=tok, buckets=8, append=True)
    assert not (out / "g00002").exists() and not (out / "building-g00002").exists()  # cleaned at once
    assert len(WindowIndex.open(out).generations) == 2


# ---- (5) Dask -----------------------------------------------------------------------------------

def test_dask_build_is_byte_identical(tmp_path, teacher, texts):
    pytest.importorskip("distributed")
    from fingerprint.scale.cluster import connect

    tok, vocab = teacher.tokenizer, teacher.tokenizer.vocab_size
    files = write_files(tmp_path / "served", texts["a"], 3, "a")
    local = build_index(files, tmp_path / "local.idx", vocab_size=vocab, widths=(1, 4), tokenizer=tok, buckets=8)
    with connect("local:2") as engine:
        remote = build_index(files, tmp_path / "dask.idx", vocab_size=vocab, widths=(1, 4), tokenizer=tok,
                             buckets=8, engine=engine)
        filt = remote.window_filter(4, vocab)
        q_tokens, q_offsets = tok.encode_batch(texts["query"])
        ids = tuple_table(q_tokens, q_offsets, 4, vocab_size=vocab).window_ids
        on_worker = engine.client.submit(lambda f, x: f.contains(x), filt, ids).result()
    np.testing.assert_array_equal(on_worker, local.window_filter(4, vocab).contains(ids))
    for h in (1, 4):
        assert [p.read_bytes() for p in remote.shard_paths(h)] == [p.read_bytes() for p in local.shard_paths(h)]
    assert [g.bucket_windows for g in remote.generations] == [g.bucket_windows for g in local.generations]


# ---- (6) the command line -----------------------------------------------------------------------

def test_cli_index_build_and_info(tmp_path, teacher, texts, capsys):
    from fingerprint.keys import FingerprintKey

    tok = teacher.tokenizer
    files = write_files(tmp_path / "served", texts["a"], 2, "a")
    out = tmp_path / "cli.idx"
    assert main(["index", "build", str(tmp_path / "served" / "*.jsonl"), "--out", str(out), "--tokenizer",
                 tok.source, "--vocab-size", str(tok.vocab_size), "-H", "1", "-H", "2", "--buckets", "8",
                 "--quiet"]) == 0
    printed = capsys.readouterr()
    assert "generation 0, 2 files, 300 responses" in printed.out and printed.err == ""
    assert_same_set(WindowIndex.open(out), teacher, texts["a"], texts["query"], widths=(1, 2))

    extra = write_jsonl(tmp_path / "extra.jsonl", texts["b"], "b")
    assert main(["index", "build", str(extra), "--out", str(out), "--tokenizer", tok.source, "--vocab-size",
                 str(tok.vocab_size), "--append"]) == 0  # widths and buckets: the index's
    printed = capsys.readouterr()
    assert "generation 1" in printed.out and "partitions" in printed.err

    assert main(["index", "info", str(out)]) == 0
    info = capsys.readouterr().out
    idx = WindowIndex.open(out)
    assert f"h=2: {idx.n_windows(2):,} windows" in info
    assert "generations  2" in info and "extra.jsonl" in info and files[0].name in info
    assert "size on disk" in info and f"{idx.nbytes:,} bytes" in info

    key = tmp_path / "k.json"
    FingerprintKey.generate("greenlist", vocab_size=tok.vocab_size, context_width=3).save(key)
    assert main(["index", "build", str(extra), "--out", str(tmp_path / "k.idx"), "--tokenizer", tok.source,
                 "--key", str(key), "--quiet"]) == 0
    assert WindowIndex.open(tmp_path / "k.idx").widths == (3,)
    capsys.readouterr()

    for argv, message in [
        (["index", "build", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "m.idx"), "--tokenizer",
          tok.source, "--vocab-size", "8192", "--quiet"], "no such file"),
        (["index", "build", str(extra), "--out", str(out), "--tokenizer", tok.source, "--vocab-size", "8192",
          "--quiet"], "already a served-window index"),
        (["index", "build", str(extra), "--out", str(out), "--tokenizer", tok.source, "--vocab-size", "8192",
          "--append", "--quiet"], "already indexed"),
        (["index", "build", str(extra), "--out", str(tmp_path / "v.idx"), "--tokenizer", tok.source,
          "--quiet"], "--vocab-size"),
        (["index", "info", str(tmp_path / "served")], "not a served-window index"),
    ]:
        assert main(argv) == 2
        assert message in capsys.readouterr().err
