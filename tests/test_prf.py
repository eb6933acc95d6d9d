import hashlib
import struct

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fingerprint.errors import ParameterError, TokenError
from fingerprint.prf import KeyedPRF, to_unit_interval

SECRET = bytes(range(32))


def reference_value(secret: bytes, window: list[int], token: int) -> int:
    """Straight-line re-implementation of the documented construction, one tuple at a time."""
    aes_key = hashlib.blake2b(b"aes-256 tuple prf", key=secret, digest_size=32,
                              person=b"fingerprint.prf1").digest()
    words = [0x46500000 | len(window), *window, token]
    words += [0] * (-len(words) % 4)
    state = bytes(16)
    for i in range(0, len(words), 4):
        block = struct.pack("<4I", *words[i:i + 4])
        enc = Cipher(algorithms.AES(aes_key), modes.ECB()).encryptor()
        state = enc.update(bytes(a ^ b for a, b in zip(state, block))) + enc.finalize()
    return struct.unpack("<Q", state[:8])[0]


def test_fixed_vectors():
    prf = KeyedPRF(SECRET)
    w = np.array([[0, 0], [1, 2], [8191, 5], [4294967295, 7]])
    t = np.array([0, 3, 100, 4294967295])
    assert [int(v) for v in prf.tuple_values(w, t)] == [
        0x6E11797E68B81CB5, 0x044C0911A1B7D32D, 0x3665A301931D7FDC, 0x8EEF1554CB37EB5B]
    assert [int(v) for v in prf.tuple_values(np.zeros((2, 0), int), np.array([0, 1]))] == [
        0xA9017989F401E7DB, 0x8AAD5CD435746A58]
    assert [int(v) for v in prf.tuple_values(np.arange(10).reshape(2, 5), np.array([0, 1]))] == [
        0x76902E38ECF2AA98, 0xE79D7A44CC80A364]


@pytest.mark.parametrize("h", [0, 1, 2, 3, 6, 11])
def test_matches_reference_implementation(h):
    rng = np.random.default_rng(h)
    w = rng.integers(0, 2**32, size=(20, h))
    t = rng.integers(0, 2**32, size=20)
    got = KeyedPRF(SECRET).tuple_values(w, t)
    assert [int(v) for v in got] == [reference_value(SECRET, list(map(int, w[i])), int(t[i])) for i in range(20)]


def test_row_values_equal_tuple_values():
    prf = KeyedPRF(SECRET)
    w = np.array([[3, 4], [5, 6], [7, 7]])
    rows = prf.row_values(w, 50)
    assert rows.shape == (3, 50)
    for i in range(3):
        assert np.array_equal(rows[i], prf.tuple_values(np.repeat(w[i:i + 1], 50, axis=0), np.arange(50)))


def test_keys_differ_and_bits_balanced():
    w = np.zeros((200_000, 2), dtype=np.int64)
    t = np.arange(200_000)
    a = KeyedPRF(SECRET).tuple_values(w, t)
    b = KeyedPRF(bytes(32)).tuple_values(w, t)
    assert (a != b).mean() > 0.999
    bits = (a[:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
    # each bit is Bernoulli(1/2): 200k draws, 6 sigma band
    assert np.all(np.abs(bits.mean(axis=0) - 0.5) < 6 * 0.5 / np.sqrt(200_000))


def test_unit_interval_open():
    u = to_unit_interval(np.array([0, 2**64 - 1], dtype=np.uint64))
    assert 0 < u[0] < 1e-15 and 1 - 1e-15 < u[1] < 1
    assert np.isfinite(-np.log1p(-u)).all()


def test_repr_hides_secret_and_bad_input():
    prf = KeyedPRF(SECRET)
    assert SECRET.hex() not in repr(prf)
    with pytest.raises(ParameterError):
        KeyedPRF(b"short")
    with pytest.raises(TokenError, match="shape"):
        prf.tuple_values(np.zeros((3, 2)), np.zeros(4))
