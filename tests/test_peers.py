"""The peer comparison command (benchmarks/peers.py) on a small input: it runs, writes the
table into the README block, and fingerprint's hf-kgw green counts equal transformers'."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # times transformers on 200k tokens: a benchmark (run with -m slow)
def test_peers_command_writes_the_table_with_equal_green_counts(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\n<!-- peers:begin -->\nold table\n<!-- peers:end -->\n\nafter\n")
    out = tmp_path / "peers.json"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "peers.py"), "--vocab", "2048", "50257",
                          "--tokens", "20000", "--peer-tokens", "1500", "--markllm-tokens", "300",
                          "--markllm-python", str(tmp_path / "no-venv" / "python"), "--readme", str(readme),
                          "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    rows = json.loads(out.read_text())["rows"]
    assert {(r["vocab"], r["suite"]) for r in rows} == {
        (v, s) for v in (2048, 50257)
        for s in ("fingerprint greenlist", "fingerprint hf-kgw", "transformers WatermarkDetector")}
    for vocab in (2048, 50257):
        ours = next(r for r in rows if r["vocab"] == vocab and r["suite"] == "fingerprint hf-kgw")
        theirs = next(r for r in rows if r["vocab"] == vocab and r["suite"].startswith("transformers"))
        assert ours["green_all"] == theirs["green_all"] > ours["green_distinct"] == theirs["green_distinct"] > 0
        assert all(r["tokens_per_s"] > 0 and r["peak_rss_mib"] > 0 for r in rows)
    text = readme.read_text()
    assert "old table" not in text and text.endswith("after\n") and "| 50,257 | fingerprint hf-kgw |" in text
    assert "MarkLLM skipped" in res.stderr
