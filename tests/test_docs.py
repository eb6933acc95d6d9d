"""The documentation site: every command of the guide runs, and the site builds without a warning.

``docs/guide.md`` ("Run a real investigation") is executed as written: its ```bash blocks and its
```python blocks (each run by ``python3`` through a here-document), in document order, in one bash
process (``bash -euo pipefail``) in an empty folder, with this interpreter's ``fingerprint`` first on
PATH. Blocks in any other fence language (``console``, ``yaml``, ``toml``, ``text``) are
configuration or illustration, and the page says they are not run. A ```bash or ```python block on
any other page fails :func:`test_only_the_guide_has_runnable_blocks`: add the page to
``RUN_PAGES`` (and make it run) or use another fence language.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
GUIDE = DOCS / "guide.md"
#: Pages whose ```bash and ```python blocks are run (in this order, each in its own empty folder).
RUN_PAGES = [GUIDE]
RUN_LANGUAGES = ("bash", "python")
#: The guide runs in about 45 s on a quiet 2-core machine; this only stops a hung server.
GUIDE_TIMEOUT_S = 600

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$")


@dataclass(frozen=True)
class Block:
    """A fenced code block: its language (the info string's first word), code and first line."""

    language: str
    code: str
    line: int


def code_blocks(path: Path) -> list[Block]:
    """Every fenced code block of a Markdown file, in order (indented fences included)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = m["indent"], m["fence"]
        language = (m["info"].split() or [""])[0].strip("{}.").lower()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not (lines[j].strip().startswith(fence) and lines[j].strip().strip(fence[0]) == ""):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        if j == len(lines):
            raise AssertionError(f"{path.name} line {i + 1}: unclosed code fence")
        blocks.append(Block(language, "\n".join(body) + "\n", i + 1))
        i = j + 1
    return blocks


def runnable(path: Path) -> list[Block]:
    return [b for b in code_blocks(path) if b.language in RUN_LANGUAGES]


def script_of(path: Path) -> str:
    """One bash script running the page's blocks in order; python blocks through a here-document."""
    parts = ["set -euo pipefail"]
    for n, b in enumerate(runnable(path)):
        parts.append(f"echo '>>> {path.name} line {b.line} ({b.language})' >&2")
        if b.language == "bash":
            parts.append(b.code)
        else:
            tag = f"PYTHON_BLOCK_{n}"
            assert tag not in b.code
            parts.append(f"python3 - <<'{tag}'\n{b.code}{tag}")
    return "\n".join(parts) + "\n"


def run_page(path: Path, workdir: Path, *, timeout: float) -> subprocess.CompletedProcess:
    """Run a page's script in ``workdir`` as a new process group, killed whole afterwards (servers
    it started in the background included, also when a command fails or it times out). Output goes
    to files, not pipes, so a background process that keeps them open cannot hold the test."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script_of(path)], cwd=workdir, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL if timed_out else signal.SIGTERM)
            proc.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if timed_out:
        pytest.fail(f"{path.name} did not finish in {timeout} s\n--- stdout\n{stdout[-4000:]}\n"
                    f"--- stderr\n{stderr[-4000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_the_block_extractor_sees_every_fence(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n```bash\necho a\n```\n\n- item\n\n    ```python\n    print(1)\n    ```\n"
                    "```console\n$ not run\n```\n````yaml\nx: 1\n````\n", encoding="utf-8")
    blocks = code_blocks(page)
    assert [(b.language, b.line) for b in blocks] == [("bash", 2), ("python", 8), ("console", 11), ("yaml", 14)]
    assert blocks[1].code == "print(1)\n"
    assert [b.language for b in runnable(page)] == ["bash", "python"]


def test_only_the_guide_has_runnable_blocks():
    pages = sorted(DOCS.rglob("*.md"))
    assert GUIDE in pages
    for page in pages:
        if page not in RUN_PAGES:
            found = [f"line {b.line} ({b.language})" for b in runnable(page)]
            assert not found, (f"{page.relative_to(ROOT)} has runnable blocks {found} that no test runs: add the "
                               f"page to RUN_PAGES in tests/test_docs.py, or fence them as console/text/yaml")
    langs = {b.language for b in code_blocks(GUIDE)}
    assert {"bash", "python"} <= langs


def test_the_guide_runs_as_written(tmp_path):
    pytest.importorskip("transformers")  # the guide's transformers snippet (the [hf] extra)
    result = run_page(GUIDE, tmp_path, timeout=GUIDE_TIMEOUT_S)
    assert result.returncode == 0, (f"docs/guide.md failed (exit {result.returncode}); the last block started is "
                                    f"the last '>>>' line\n--- stdout\n{result.stdout[-6000:]}\n"
                                    f"--- stderr\n{result.stderr[-6000:]}")

    def report(name: str) -> dict:
        return json.loads((tmp_path / f"{name}.json").read_text(encoding="utf-8"))

    for name in ("key.json", "vllm-key.json", "tokenizer.json", "served.jsonl", "texts.jsonl", "prompts.jsonl",
                 "evidence.jsonl", "evidence.jsonl.manifest.json", "investigator.pub", "control.jsonl",
                 "reading.jsonl", "report.md", "report.html", "control-report.md", "strength.json", "strength.md",
                 "strength.xml", "served.idx/manifest.json"):
        assert (tmp_path / name).is_file(), name
    assert len((tmp_path / "served.jsonl").read_text().splitlines()) == 40
    assert len((tmp_path / "texts.jsonl").read_text().splitlines()) == 20

    # the suspect that repeats the fingerprinted server's outputs is detected, text-only and supervised
    for name in ("report", "served-report"):
        doc = report(name)
        assert doc["log10_pvalue"] < -10, (name, doc["log10_pvalue"])
        assert doc["verdict"] == "detected" or not doc["decoys"]["passed"], (name, doc["verdict"], doc["reason"])
        assert doc["custody"], name
    assert report("served-report")["n_scored"] < report("report")["n_scored"]  # the window filter selected
    # the same model without the fingerprint is not: the key null
    control = report("control-report")
    assert control["verdict"] != "detected" and control["log10_pvalue"] > -6, control["reason"]
    assert control["verdict"] in ("not detected", "inconclusive"), control["reason"]
    # logprob and reading modes run end to end (the server's distributions are unmarked: nothing to find)
    for name, mode in (("logprobs-report", "logprobs"), ("reading-report", "reading")):
        doc = report(name)
        assert doc["mode"] == mode and doc["verdict"] != "detected", (name, doc["verdict"])
    # one sentence is not a clearance
    assert report("short-report")["verdict"] == "insufficient data"
    # the CI gate passed on the fingerprinted answers (the block itself checks the control's exit 1)
    strength = json.loads((tmp_path / "strength.json").read_text(encoding="utf-8"))
    assert strength["passed"], strength["checks"]
    assert "REGRESSION" in result.stdout


def test_the_site_builds_without_warnings(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "WARNING" not in proc.stderr, proc.stderr[-4000:]
    for page in ("index.html", "guide/index.html", "access-modes/index.html", "reports/index.html",
                 "custody/index.html", "api/index.html", "api/verify/index.html", "api/stats/index.html"):
        assert (site / page).is_file(), page
    api = (site / "api" / "verify" / "index.html").read_text(encoding="utf-8")
    assert 'id="fingerprint.verify.verify_exchanges"' in api  # generated from the docstrings
