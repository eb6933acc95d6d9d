"""`fingerprint demo`, as a user runs it: the verdicts, a self-contained folder whose NEXT.md
commands work as written, and numbers that depend only on the seed."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fingerprint.apps.demo import demo_key
from fingerprint.keys import FingerprintKey
from fingerprint.sim.distill import corpus_prompts
from fingerprint.sim.generate import generate, generate_split
from fingerprint.sim.server import ServedModel


def _env() -> dict[str, str]:
    """The environment a user has after activating the venv: `fingerprint` on PATH."""
    return {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One run of the demo with its defaults, from a fresh directory, as the README says."""
    cwd = tmp_path_factory.mktemp("demo-run")
    res = subprocess.run([sys.executable, "-m", "fingerprint.cli", "demo"], cwd=cwd, env=_env(),
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    return cwd, res


def test_demo_detects_the_student_and_clears_the_control(demo):
    cwd, res = demo
    out = cwd / "fingerprint-demo"
    assert "as expected" in res.stdout, res.stdout
    student = json.loads((out / "report-student.json").read_text())
    control = json.loads((out / "report-control.json").read_text())
    assert student["log10_pvalue"] < -6 and student["verdict"] == "detected"
    assert control["log10_pvalue"] > -3 and control["verdict"] == "not detected"
    assert student["decoys"]["passed"] and control["decoys"]["passed"]
    assert student["inputs"]["suspect"][0]["format"] == "evidence"
    custody = student["custody"]  # the demo signs its evidence with an investigator key and checks it
    assert custody["ok"] and custody["evidence"][0]["manifest"]["trusted"], custody
    assert (out / "evidence-student.jsonl.manifest.json").is_file()
    assert stat.S_IMODE(os.stat(out / "key.json").st_mode) == 0o600


def test_demo_folder_is_self_contained_and_keyed_by_the_seed(demo, teacher):
    out = demo[0] / "fingerprint-demo"
    for name in ("key.json", "tokenizer.json", "served.jsonl", "queries.jsonl", "student.npz", "control.npz",
                 "investigator.key", "investigator.pub", "NEXT.md", "report-student.html", "report-control.md"):
        assert (out / name).is_file(), name
    assert FingerprintKey.load(out / "key.json").key_id == demo_key(teacher.vocab_size, 0).key_id
    assert demo_key(teacher.vocab_size, 1).key_id != demo_key(teacher.vocab_size, 0).key_id
    student = json.loads((out / "report-student.json").read_text())
    assert student["inputs"]["tokenizer"]["path"].endswith("fingerprint-demo/tokenizer.json"), student["inputs"]
    # the served-window p-value the terminal shows is in the report too
    assert student["served_window"]["results"][0]["log10_pvalue"] < student["log10_pvalue"], student["served_window"]


def _bash_blocks(markdown: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", markdown, flags=re.S)


def test_next_md_commands_run_as_written(demo):
    """Every command NEXT.md gives: re-verify (the demo's own numbers), custody, re-collect."""
    cwd = demo[0]
    out = cwd / "fingerprint-demo"
    blocks = _bash_blocks((out / "NEXT.md").read_text())
    assert len(blocks) == 3
    for block in blocks:
        res = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=cwd, env=_env(),
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, (block, res.stdout, res.stderr)
    again = json.loads((out / "reverify-student.json").read_text())
    first = json.loads((out / "report-student.json").read_text())
    assert again["log10_pvalue"] == first["log10_pvalue"] and again["n_scored"] == first["n_scored"]
    assert again["decoys"]["ks_pvalue"] == first["decoys"]["ks_pvalue"]

    def answers(name: str) -> dict[str, str]:
        records = [json.loads(x) for x in (out / name).read_text().splitlines()]
        return {r["prompt_id"]: json.dumps(r["response"], sort_keys=True) for r in records
                if r.get("type") == "exchange" and r["status"] == 200 and r["error"] is None}

    # the student served again answers the same seeded queries with the same text
    recollected, original = answers("recollected-student.jsonl"), answers("evidence-student.jsonl")
    assert len(recollected) == 200 and recollected.keys() == original.keys()
    same = sum(_text(recollected[k]) == _text(original[k]) for k in original)
    assert same == 200, same


def _text(response_json: str) -> str:
    return json.loads(response_json)["choices"][0]["message"]["content"]


def test_split_generation_depends_on_the_seed_and_parts_only(teacher):
    prompts, _ = corpus_prompts(teacher, 12, length=6, rng=np.random.default_rng(3))
    key = demo_key(teacher.vocab_size, 0)
    a = generate_split(teacher.model, prompts, 20, np.random.default_rng(5), parts=2, scheme=key.scheme_object())
    b = generate_split(teacher.model, prompts, 20, np.random.default_rng(5), parts=2, scheme=key.scheme_object())
    assert len(a) == 12 and all(np.array_equal(x, y) for x, y in zip(a, b))
    # the same slices one after the other (a platform without fork) give the same tokens
    rngs = np.random.default_rng(5).spawn(2)
    serial = (generate(teacher.model, prompts[:6], 20, rngs[0], scheme=key.scheme_object())
              + generate(teacher.model, prompts[6:], 20, rngs[1], scheme=key.scheme_object()))
    assert all(np.array_equal(x, y) for x, y in zip(a, serial))


def test_seeded_answers_repeat(teacher):
    served = ServedModel(teacher.model, teacher.tokenizer)
    kw = dict(max_tokens=30, temperature=1.0, top_p=1.0, n=1, stop=[], top_logprobs=None)
    p = served.encode("The cat sat on")
    first = served.generate(p, seed=7, **kw)[0]["ids"]
    assert np.array_equal(first, served.generate(p, seed=7, **kw)[0]["ids"])
    assert not np.array_equal(first, served.generate(p, seed=8, **kw)[0]["ids"])


def test_readme_verify_block_runs_against_the_demo_folder(demo):
    """The README's "Verify a suspect" block, as written, from where the demo ran."""
    from test_readme import readme_bash_blocks

    cwd = demo[0]
    block = readme_bash_blocks()["Verify a suspect"]
    res = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=cwd, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, (block, res.stdout, res.stderr)
    report = json.loads((cwd / "report.json").read_text())
    assert report["verdict"] == "detected" and (cwd / "report.html").is_file() and (cwd / "my-key.json").is_file()
