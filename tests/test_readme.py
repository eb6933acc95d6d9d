"""The README's commands: every `fingerprint` command in it parses with the CLI as written (no
stale flag, no placeholder), and nothing else is asked of the reader but the set-up scripts.
The runnable ones run in tests/test_demo.py (against the demo's folder) and test_docs.py."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from fingerprint.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_bash_blocks(text: str | None = None) -> dict[str, str]:
    """The README's ```bash blocks, by the section heading above each (``heading #k`` when a
    section has several)."""
    text = README.read_text(encoding="utf-8") if text is None else text
    out: dict[str, str] = {}
    heading = "top"
    for part in re.split(r"(^#+ .*$)", text, flags=re.M):
        if part.startswith("#"):
            heading = part.lstrip("#").strip()
            continue
        for k, block in enumerate(re.findall(r"```bash\n(.*?)```", part, flags=re.S)):
            out[heading if k == 0 else f"{heading} #{k + 1}"] = block
    return out


def commands(block: str) -> list[str]:
    """Shell lines of a block, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    lines = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            lines.append(shlex.split(line, comments=True))
    return [" ".join(shlex.quote(a) for a in words) for words in lines if words]


ALLOWED = ("bash .ci/", "export ", "pip install ", "source ")

CASES = [(name, cmd) for name, block in readme_bash_blocks().items() for cmd in commands(block)]


def test_the_readme_has_the_two_commands():
    top = readme_bash_blocks()
    assert commands(top["Two commands on a fresh machine"]) == ["bash .ci/demo"]
    assert commands(top["Two commands on a fresh machine #2"]) == ["bash .ci/run"]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "bash .ci/setup test" in ci and "pytest" in ci


@pytest.mark.parametrize("section,command", CASES, ids=[f"{s}: {c[:40]}" for s, c in CASES])
def test_every_readme_command_parses(section, command):
    words = shlex.split(command)
    if words[0] != "fingerprint":
        assert command.startswith(ALLOWED), f"{section}: {command}"
        return
    words = [w for w in words[1:] if w != "&"]
    try:
        build_parser().parse_args(words)
    except SystemExit as exc:  # argparse's error exit: a stale flag or a placeholder
        pytest.fail(f"README section {section!r}: `{command}` does not parse (exit {exc.code})")


def test_a_stale_flag_is_caught():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["verify", "x.jsonl", "--key", "k", "--tokenizer", "t", "--no-such-flag"])
