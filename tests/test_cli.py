import json
import os
import stat
import subprocess
import sys

from fingerprint.cli import main


def test_keygen_writes_key(tmp_path, capsys):
    out = tmp_path / "key.json"
    assert main(["keygen", "--scheme", "greenlist", "--vocab-size", "8192", "--gamma", "0.5",
                 "-H", "1", "--out", str(out)]) == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    data = json.loads(out.read_text())
    assert data["params"] == {"context_width": 1, "gamma": 0.5, "delta": 3.0}
    printed = capsys.readouterr().out
    assert data["key_id"] in printed and data["secret"] not in printed


def test_keygen_bad_input_exits_2(tmp_path, capsys):
    out = tmp_path / "key.json"
    assert main(["keygen", "--scheme", "greenlist", "--vocab-size", "100", "--gamma", "1.5",
                 "--out", str(out)]) == 2
    assert "gamma must be a number in (0, 1), got 1.5" in capsys.readouterr().err
    assert main(["keygen", "--scheme", "gumbel", "--vocab-size", "100", "--layers", "3",
                 "--out", str(out)]) == 2
    assert "--layers does not apply to scheme 'gumbel'" in capsys.readouterr().err
    assert main(["keygen", "--scheme", "tournament", "--vocab-size", "1", "--out", str(out)]) == 2
    assert main(["keygen", "--scheme", "tournament", "--vocab-size", "10", "--out", str(out)]) == 0
    assert main(["keygen", "--scheme", "tournament", "--vocab-size", "10", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_demo_command_runs(teacher):
    res = subprocess.run([sys.executable, "-m", "fingerprint.cli", "demo", "--prompts", "4",
                          "--tokens", "40"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "all as expected" in res.stdout
    assert res.stdout.count("not detected") == 3
