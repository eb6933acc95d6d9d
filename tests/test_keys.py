import json
import os
import stat

import pytest

from fingerprint.errors import KeyFileError, ParameterError
from fingerprint.keys import FingerprintKey


def test_generate_save_load_roundtrip(tmp_path):
    key = FingerprintKey.generate("greenlist", vocab_size=8192, gamma=0.5)
    path = key.save(tmp_path / "k.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = FingerprintKey.load(path)
    assert loaded == key
    assert loaded.params == {"context_width": 2, "gamma": 0.5, "delta": 3.0}
    a = key.scheme_object().tuple_values([[1, 2]], [3])
    b = loaded.scheme_object().tuple_values([[1, 2]], [3])
    assert a[0] == b[0]


def test_secrets_are_fresh_and_hidden(tmp_path):
    a = FingerprintKey.generate("gumbel", vocab_size=100)
    b = FingerprintKey.generate("gumbel", vocab_size=100)
    assert a.key_id != b.key_id
    secret = json.loads(a.save(tmp_path / "a.json").read_text())["secret"]
    assert len(secret) == 64
    for text in (repr(a), str(a), f"{a}", json.dumps(a.to_public_dict())):
        assert secret not in text
    assert secret[:16] not in a.key_id
    with pytest.raises(TypeError):
        import pickle
        pickle.dumps(a)


def test_refuses_overwrite(tmp_path):
    key = FingerprintKey.generate("tournament", vocab_size=100)
    key.save(tmp_path / "k.json")
    with pytest.raises(KeyFileError, match="already exists"):
        key.save(tmp_path / "k.json")
    key.save(tmp_path / "k.json", overwrite=True)


def test_decoys_reproducible_and_independent():
    key = FingerprintKey.generate("greenlist", vocab_size=1000, context_width=1)
    d1 = key.decoys(5, seed=7)
    d2 = key.decoys(5, seed=7)
    d3 = key.decoys(5, seed=8)
    assert [d.key_id for d in d1] == [d.key_id for d in d2]
    assert len({d.key_id for d in d1 + d3 + [key]}) == 11
    assert all(d.params == key.params and d.vocab_size == 1000 for d in d1)


@pytest.mark.parametrize("field,value,match", [
    ("secret", "zz" * 32, "'secret' is not hexadecimal"),
    ("secret", "ab", "'secret' must be 64 hex digits"),
    ("scheme", "nope", "field 'scheme'.*unknown scheme 'nope'"),
    ("params", {"gamma": 2.0}, "field 'params'.*gamma"),
    ("params", {"context_width": -1}, "field 'params'.*context_width"),
    ("params", {"bogus": 1}, "field 'params'.*bogus"),
    ("params", [], "'params' must be an object"),
    ("vocab_size", 1, "'vocab_size'"),
    ("vocab_size", "8192", "'vocab_size'"),
    ("key_id", "0" * 32, "'key_id' does not match"),
    ("format", "other", "'format'"),
    ("version", 3, "'version'"),
])
def test_load_names_the_bad_field(tmp_path, field, value, match):
    key = FingerprintKey.generate("greenlist", vocab_size=8192)
    path = key.save(tmp_path / "k.json")
    data = json.loads(path.read_text())
    data[field] = value
    path.write_text(json.dumps(data))
    with pytest.raises(KeyFileError, match=match) as exc:
        FingerprintKey.load(path)
    assert str(path) in str(exc.value)


def test_load_missing_field_and_bad_json(tmp_path):
    key = FingerprintKey.generate("greenlist", vocab_size=8192)
    path = key.save(tmp_path / "k.json")
    data = json.loads(path.read_text())
    del data["scheme"]
    path.write_text(json.dumps(data))
    with pytest.raises(KeyFileError, match="field 'scheme' missing"):
        FingerprintKey.load(path)
    path.write_text("{not json")
    with pytest.raises(KeyFileError, match="not valid JSON"):
        FingerprintKey.load(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(KeyFileError, match="not UTF-8"):
        FingerprintKey.load(path)
    with pytest.raises(KeyFileError, match="cannot read"):
        FingerprintKey.load(tmp_path / "missing.json")


@pytest.mark.parametrize("scheme,params,match", [
    ("greenlist", {"gamma": 0.0}, "gamma"),
    ("greenlist", {"gamma": 1.0}, "gamma"),
    ("greenlist", {"delta": -1.0}, "delta"),
    ("greenlist", {"context_width": -1}, "context_width"),
    ("tournament", {"layers": 0}, "layers"),
    ("tournament", {"layers": 65}, "layers"),
    ("gumbel", {"gamma": 0.5}, "gamma"),
    ("bogus", {}, "unknown scheme 'bogus'"),
])
def test_invalid_parameters(scheme, params, match):
    with pytest.raises(ParameterError, match=match):
        FingerprintKey.generate(scheme, vocab_size=100, **params)
