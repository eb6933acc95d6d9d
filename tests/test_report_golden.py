"""Golden-file tests of the Markdown verify report, from fully deterministic inputs (a fixed key
secret, text generated from fixed seeds, decoys from a fixed seed); the verdicts' plain-language
sentences; the one p-value formatter.

Volatile fields (run time, tool version, file paths, the tokenizer file's hash) are masked before
comparing. After an intended change of the report, regenerate the golden files with
``FINGERPRINT_UPDATE_GOLDEN=1 python3 -m pytest tests/test_report_golden.py`` and review the diff.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fingerprint.corpus import read_exchanges
from fingerprint.keys import FingerprintKey
from fingerprint.report import build_report, format_pvalue, render_html, render_markdown
from fingerprint.report.format import control_sentence, summary_sentence
from fingerprint.sim.generate import generate
from fingerprint.verify import VerifyOptions, verify_exchanges

GOLDEN = Path(__file__).parent / "data" / "golden"
UPDATE = os.environ.get("FINGERPRINT_UPDATE_GOLDEN") == "1"
NAMES = ("detected", "not-detected", "insufficient-data")


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reports(teacher, tmp_path_factory) -> dict[str, dict[str, Any]]:
    """The report documents of three verdicts: fingerprinted text (detected, with the served-window
    companion result), plain text from the same model (not detected), and 20 tokens of it
    (insufficient data)."""
    tmp = tmp_path_factory.mktemp("golden")
    key = FingerprintKey(bytes(range(11, 43)), "greenlist", {"delta": 3.0}, teacher.vocab_size)
    step = (teacher.offsets.size - 1) // 40
    prompts = [teacher.tokens[teacher.offsets[i]:teacher.offsets[i] + 12] for i in range(0, 40 * step, step)]
    marked = generate(teacher.model, prompts, 40, np.random.default_rng(1), scheme=key.scheme_object())
    plain = generate(teacher.model, prompts, 40, np.random.default_rng(2))
    dec = teacher.tokenizer.decode

    def exchanges(name: str, ps: list[np.ndarray], rs: list[np.ndarray]) -> Path:
        return _write(tmp / f"{name}.jsonl", [{"id": f"r{i}", "prompt": dec(p), "response": dec(r)}
                                              for i, (p, r) in enumerate(zip(ps, rs))])

    files = {"detected": exchanges("marked", prompts, marked), "not-detected": exchanges("plain", prompts, plain),
             "insufficient-data": exchanges("short", prompts[:1], [plain[0][:20]])}
    opts = VerifyOptions(n_decoys=20)
    docs = {}
    for name, path in files.items():
        suspect = read_exchanges([path])
        res = verify_exchanges(suspect, teacher.tokenizer, [key], options=opts)
        served_result = None
        if name == "detected":
            served = read_exchanges([files["detected"]], require_prompt=False)
            served_result = verify_exchanges(suspect, teacher.tokenizer, [key], options=opts, served=served)
        docs[name] = build_report(res, suspect=suspect, tokenizer_path=str(teacher.tokenizer.source),
                                  tokenizer_sha256="0" * 64, served_result=served_result)
    return docs


def masked(doc: dict[str, Any]) -> dict[str, Any]:
    """The document with its volatile fields masked: run time, version, paths, tokenizer hash."""
    doc = copy.deepcopy(doc)
    doc["created_at"] = "<created_at>"
    doc["version"] = "<version>"
    for f in doc["inputs"]["suspect"] + doc["inputs"]["served"]:
        f["path"] = Path(f["path"]).name
    doc["inputs"]["tokenizer"].update(path="<tokenizer>", sha256="<sha256>")
    return doc


def mask_text(text: str) -> str:
    """Belt and braces over the rendered text: ISO dates and times, durations."""
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)?", "<created_at>", text)
    return re.sub(r"\b\d+(\.\d+)? ?(ms|s) elapsed\b", "<duration>", text)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.is_file(), f"{path} missing: run with FINGERPRINT_UPDATE_GOLDEN=1 to create it"
    expected = path.read_text(encoding="utf-8")
    if text != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(keepends=True), text.splitlines(keepends=True),
                                            f"{path} (golden)", "rendered now"))
        pytest.fail(f"the Markdown report differs from {path} (FINGERPRINT_UPDATE_GOLDEN=1 regenerates it "
                    f"after an intended change):\n{diff}", pytrace=False)


@pytest.mark.parametrize("name", NAMES)
def test_markdown_report_matches_golden(reports, name):
    doc = reports[name]
    assert doc["verdict"] == name.replace("-", " ")
    check_golden(f"verify-{name}.md", mask_text(render_markdown(masked(doc))))


def test_insufficient_data_verdict_at_20_tokens(reports):
    doc = reports["insufficient-data"]
    assert doc["n_tokens"] == 20
    assert doc["verdict"] == "insufficient data" and doc["results"][0]["verdict"] == "insufficient data"
    need = doc["sufficiency"]["tokens_needed"]
    assert isinstance(need, int) and need > 20
    sentence = doc["summary_sentence"]
    assert sentence.startswith("There is not enough suspect text for a verdict: 20 tokens")
    assert f"about {need:,} tokens are needed" in sentence
    assert sentence in render_markdown(doc)


def test_summary_sentences_by_verdict(reports):
    det, nd = reports["detected"], reports["not-detected"]
    lp = det["holm_log10_pvalue"]
    assert det["summary_sentence"] == (
        "If the suspect had never been trained on your outputs, a signal at least this strong would appear with "
        f"probability about 1 in 10^{round(-lp)} (p = {format_pvalue(lp)}).")
    s = nd["summary_sentence"]
    assert s.startswith("The data show no signal beyond chance") and "not proof" in s
    assert f"{nd['sufficiency']['min_detectable_effect']:.3g} or more" in s
    for name in NAMES:
        doc = reports[name]
        md = render_markdown(doc)
        # the sentence opens the report, right under the title
        assert md.splitlines()[2] == doc["summary_sentence"]
        assert "<p class='summary'>" in render_html(doc)


def test_inconclusive_sentence_gives_the_reason_and_the_failed_control(reports):
    doc = copy.deepcopy(reports["not-detected"])
    r = doc["results"][0]
    reason = "the decoy keys' p-values are not uniform: the theoretical null may not hold for this input"
    r.update(verdict="inconclusive", reason=reason)
    r["decoys"].update(passed=False, ks_pvalue=0.0002)
    doc["verdict"] = "inconclusive"
    assert summary_sentence(doc) == (f"The test cannot give a verdict on this data: {reason}. Neither a finding nor "
                                     "its absence should be relied on (see Notes).")
    assert control_sentence(r, 0.001) == (
        "Control: 20 decoy keys (secrets that never fingerprinted anything) gave p-values that do not look uniform "
        "(KS p = 0.0002, below 0.001): the test's assumptions may not hold for this input, so no verdict is drawn "
        "from it.")
    md, page = render_markdown(doc), render_html(doc)
    assert "strongest signal" not in md and "strongest signal" not in page
    assert '(KS p = <span class="pvalue">0.0002</span>, below <span class="pvalue">0.001</span>)' in page


def test_titles_controls_and_served_window_fit_the_verdict(reports):
    det, nd = render_markdown(reports["detected"]), render_markdown(reports["not-detected"])
    assert "## Responses with the strongest signal" in det
    assert "strongest signal" not in nd and "Most fingerprinted" not in nd
    for md in (det, nd):
        assert ("Control: 20 decoy keys (secrets that never fingerprinted anything) gave p-values that look "
                "uniform") in md
    sw = reports["detected"]["served_window"]
    assert sw is not None and sw["window_filter_windows"] > 0
    p = format_pvalue(sw["results"][0]["holm_log10_pvalue"])
    assert sw["results"][0]["pvalue_display"] == format_pvalue(sw["results"][0]["log10_pvalue"])
    assert f"p = {p} over" in det and "## Served-window test" in det
    assert reports["not-detected"]["served_window"] is None and "Served-window" not in nd


def test_every_pvalue_in_one_style(reports):
    style = re.compile(r"^(1|0|n/a|0\.\d+|[1-9](\.\d)?e-\d+)$")
    for doc in reports.values():
        for r in doc["results"]:
            for v in r["display"].values():
                assert v is None or style.match(v), v
        md = render_markdown(doc)
        plain = md.replace("\\", "")
        assert "10^-" not in plain and not re.search(r"\de-0\d", plain), md
        html = render_html(doc)
        assert "<script" not in html
        for span in re.findall(r'<span class="pvalue">([^<]*)</span>', html):
            assert style.match(span), span


@pytest.mark.parametrize("log10_p,text", [
    (0.0, "1"), (-0.3, "0.501"), (-1.91, "0.0123"), (-4.0, "0.0001"), (-5.5, "3.2e-6"), (-6.0, "1e-6"),
    (-44.49485, "3.2e-45"), (-20102.36, "4.4e-20103"), (-1e9, "1e-1000000000"), (-29.99999, "1e-30"),
    (float("nan"), "n/a"), (float("-inf"), "0")])
def test_format_pvalue_rules(log10_p, text):
    assert format_pvalue(log10_p) == text
