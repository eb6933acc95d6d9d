"""Every subcommand's --help works, and every option explains itself and shows its default
(issue 15, CLI consistency). In-process argparse, plus one subprocess for ``python -m``."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest

from fingerprint.cli import build_parser, main

#: One flag, one meaning across commands (renamed in issue 15): these old spellings must not come back.
RETIRED = {"roundtrip": ["--prompts", "--tokens", "--vocab-size"], "serve": ["--vocab-size"],
           "demo": ["--queries", "--tokens"]}


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(path, parser) for every command and sub-command, the top level first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(build_parser()))


def _options(parser: argparse.ArgumentParser):
    return [a for a in parser._actions
            if not isinstance(a, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction))]


def _shows(default: object, text: str) -> bool:
    """Whether a help text states ``default``: the word "default" and the value (numbers compared
    as numbers, so 1e-6 shows 1e-06)."""
    if "default" not in text:
        return False
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        numbers = re.findall(r"[-+]?(?:\d[\d_]*\.?\d*|\.\d+)(?:e[-+]?\d+)?", text)
        return any(float(n.replace("_", "")) == float(default) for n in numbers if n not in ("-", "+"))
    return str(default) in text


def test_the_walk_reaches_every_command():
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"keygen", "verify", "collect", "serve", "strength", "demo", "roundtrip", "evidence verify",
            "evidence keygen", "evidence sign", "evidence summary", "index build", "index info"} <= names


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "fingerprint")
def test_help_exits_0(path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*path, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: fingerprint") and "show this help message" in out


def test_every_option_has_help_and_shows_its_default():
    missing_help, missing_default = [], []
    for path, parser in COMMANDS:
        formatter = parser._get_formatter()
        for action in _options(parser):
            name = f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}"
            if not (action.help or "").strip() or action.help == argparse.SUPPRESS:
                missing_help.append(name)
                continue
            text = " ".join(formatter._expand_help(action).split())
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                if not _shows(action.default, text):
                    missing_default.append(f"{name}: {action.default!r} not in {text!r}")
    assert not missing_help, missing_help
    assert not missing_default, missing_default


def test_one_meaning_per_flag():
    by_path = {" ".join(p): parser for p, parser in COMMANDS}
    for command, flags in RETIRED.items():
        present = {s for a in by_path[command]._actions for s in a.option_strings}
        assert not present & set(flags), (command, present & set(flags))
    # --prompts is a file wherever it appears (collect's positional PROMPTS); counts are --n-prompts
    for path, parser in COMMANDS:
        for action in parser._actions:
            if "--n-prompts" in action.option_strings or "--bpe-vocab-size" in action.option_strings:
                assert action.type is int, (path, action.option_strings)
            if "--vocab-size" in action.option_strings:  # the model's logits width, in keygen and index build
                assert "logits" in action.help, (path, action.help)


def test_served_takes_one_path_per_flag():
    args = build_parser().parse_args(["verify", "--served", "a.jsonl", "--served", "b.jsonl", "s.jsonl", "--key",
                                      "k.json", "--tokenizer", "t.json"])
    assert args.served == ["a.jsonl", "b.jsonl"] and args.suspect == ["s.jsonl"]


def test_python_m_help():
    res = subprocess.run([sys.executable, "-m", "fingerprint.cli", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert "COMMAND" in res.stdout and "exit codes" in res.stdout
