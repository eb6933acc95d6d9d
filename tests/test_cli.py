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


def test_roundtrip_command_runs(teacher):
    res = subprocess.run([sys.executable, "-m", "fingerprint.cli", "roundtrip", "--prompts", "4",
                          "--tokens", "40"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    rows = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[1] in ("fingerprinted", "plain"):
            rows[(parts[0], parts[1])] = (int(parts[2]), float(parts[3]))
    assert {s for s, _ in rows} == {"greenlist", "gumbel", "tournament"}
    for scheme in ("greenlist", "gumbel", "tournament"):
        scored, p_marked = rows[(scheme, "fingerprinted")]
        # fresh keys and samples each run (OS CSPRNG in the subprocess): 1e-10 leaves a wide margin
        # (greenlist at about 150 tuples gives 1e-14 to 1e-25), the bound the README's round trip states
        assert scored > 40 and p_marked < 1e-10, (scheme, rows)
        assert rows[(scheme, "plain")][1] > 1e-5, (scheme, rows)


def test_demo_detects_the_student_and_clears_the_control(teacher, tmp_path):
    """The README's main job, as a user runs it (default settings)."""
    import time

    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "fingerprint.cli", "demo", "--out", str(tmp_path / "demo")],
                         capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - t0
    assert res.returncode == 0, res.stderr
    assert "as expected" in res.stdout, res.stdout
    student = json.loads((tmp_path / "demo" / "report-student.json").read_text())
    control = json.loads((tmp_path / "demo" / "report-control.json").read_text())
    assert student["log10_pvalue"] < -6 and student["verdict"] == "detected"
    assert control["log10_pvalue"] > -3 and control["verdict"] == "not detected"
    assert student["decoys"]["passed"] and control["decoys"]["passed"]
    assert student["inputs"]["suspect"][0]["format"] == "evidence"
    custody = student["custody"]  # the demo signs its evidence with an investigator key and checks it
    assert custody["ok"] and custody["evidence"][0]["manifest"]["trusted"], custody
    assert (tmp_path / "demo" / "evidence-student.jsonl.manifest.json").is_file()
    assert stat.S_IMODE(os.stat(tmp_path / "demo" / "key.json").st_mode) == 0o600
    print(f"demo took {elapsed:.0f}s")
