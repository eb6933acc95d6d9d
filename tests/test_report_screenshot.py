"""The HTML verify report in headless Chromium at phone (390 px) and desktop (1280 px) widths:
no horizontal overflow, no p-value wrapped over two lines, a screenshot that is not blank.

The report itself holds no script: a copy gets a measuring script appended, and is loaded in an
iframe of the width under test inside a harness page (headless Chromium's window is at least 500
px wide, so the iframe sets the phone's viewport); the copy posts its measurements to the
harness, which writes them into its DOM for ``--dump-dom``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fingerprint.corpus import read_exchanges
from fingerprint.keys import FingerprintKey
from fingerprint.report import build_report, render_html
from fingerprint.sim.generate import generate
from fingerprint.verify import VerifyOptions, verify_exchanges

WIDTHS = (390, 1280)

MEASURE = """<script>
window.addEventListener("load", function () {
  var de = document.documentElement;
  var pv = Array.prototype.map.call(document.querySelectorAll(".pvalue"), function (e) {
    return [e.textContent, e.getClientRects().length];
  });
  parent.postMessage(JSON.stringify({probe: location.search.slice(1), scrollWidth: de.scrollWidth,
                                     clientWidth: de.clientWidth, innerWidth: window.innerWidth, pvalues: pv}), "*");
});
</script>
"""

HARNESS = """<!DOCTYPE html><html><head><meta charset="utf-8">
<style>body{{margin:0}}iframe{{border:0;height:900px;display:block}}</style></head><body>
{frames}<pre id="measured"></pre>
<script>
window.addEventListener("message", function (ev) {{
  document.getElementById("measured").textContent += ev.data + "\\n";
}});
</script></body></html>
"""


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "headless Chromium is required (installed by .ci/setup: apt-get install chromium)"
    return exe


def run_chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", f"--user-data-dir={tmp / 'chromium-profile'}", *args],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def html_reports(teacher, tmp_path_factory) -> dict[str, Path]:
    """HTML reports of a detected (with the served-window result) and a not-detected verdict."""
    tmp = tmp_path_factory.mktemp("screenshot")
    key = FingerprintKey(bytes(range(11, 43)), "greenlist", {"delta": 3.0}, teacher.vocab_size)
    step = (teacher.offsets.size - 1) // 30
    prompts = [teacher.tokens[teacher.offsets[i]:teacher.offsets[i] + 12] for i in range(0, 30 * step, step)]
    dec = teacher.tokenizer.decode
    out = {}
    for name, scheme, seed in (("detected", key.scheme_object(), 1), ("not-detected", None, 2)):
        responses = generate(teacher.model, prompts, 40, np.random.default_rng(seed), scheme=scheme)
        path = tmp / f"{name}.jsonl"
        # a long id without spaces: it must not push the page wider than a phone
        path.write_text("".join(json.dumps({"id": f"response-{i}-" + "x" * 60, "prompt": dec(p), "response": dec(r)})
                                + "\n" for i, (p, r) in enumerate(zip(prompts, responses))), encoding="utf-8")
        suspect = read_exchanges([path])
        opts = VerifyOptions(n_decoys=20)
        res = verify_exchanges(suspect, teacher.tokenizer, [key], options=opts)
        sup = verify_exchanges(suspect, teacher.tokenizer, [key], options=opts,
                               served=read_exchanges([path], require_prompt=False))
        doc = build_report(res, suspect=suspect, tokenizer_path=str(teacher.tokenizer.source),
                           tokenizer_sha256="0" * 64, served_result=sup)
        assert doc["verdict"] == name.replace("-", " ")
        html_path = tmp / f"report-{name}.html"
        html_path.write_text(render_html(doc), encoding="utf-8")
        out[name] = html_path
    return out


@pytest.fixture(scope="module")
def measured(html_reports) -> dict[tuple[str, int], dict[str, Any]]:
    """Layout measurements of each report at each width, from one Chromium run."""
    frames = []
    for name, html_path in html_reports.items():
        text = html_path.read_text(encoding="utf-8")
        assert "<script" not in text.lower(), "the report must not contain scripts"
        probe = html_path.with_name(f"{html_path.stem}-probe.html")
        probe.write_text(text.replace("</body></html>", MEASURE + "</body></html>"), encoding="utf-8")
        frames += [f'<iframe style="width:{w}px" src="{probe.name}?{name}-{w}"></iframe>' for w in WIDTHS]
    tmp = next(iter(html_reports.values())).parent
    harness = tmp / "harness.html"
    harness.write_text(HARNESS.format(frames="".join(frames)), encoding="utf-8")
    res = run_chromium(tmp, "--window-size=1300,1000", "--virtual-time-budget=3000", "--dump-dom",
                       harness.resolve().as_uri())
    found = re.search(r'<pre id="measured">([^<]+)</pre>', res.stdout)
    assert found, f"no measurements from Chromium: {res.stderr[-2000:]}"
    out = {}
    for line in found.group(1).replace("&quot;", '"').replace("&amp;", "&").splitlines():
        m = json.loads(line)
        name, width = m["probe"].rsplit("-", 1)
        out[name, int(width)] = m
    return out


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", ["detected", "not-detected"])
def test_html_report_fits_and_never_wraps_a_pvalue(measured, name, width):
    assert (name, width) in measured, f"no measurements of {name} at {width} px: {sorted(measured)}"
    m = measured[name, width]
    assert m["innerWidth"] == width
    assert m["scrollWidth"] <= m["clientWidth"] <= m["innerWidth"], m
    assert len(m["pvalues"]) >= 5
    wrapped = [text for text, rects in m["pvalues"] if rects != 1]
    assert not wrapped, f"p-values wrapped at {width} px: {wrapped}"


@pytest.mark.parametrize("width", WIDTHS)
def test_html_report_screenshot_is_not_blank(html_reports, width):
    from PIL import Image

    html_path = html_reports["detected"]
    png = html_path.with_name(f"shot-{width}.png")
    run_chromium(html_path.parent, f"--window-size={width},1400", f"--screenshot={png}", html_path.resolve().as_uri())
    assert png.is_file(), "Chromium wrote no screenshot"
    img = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    assert img.shape[1] == width
    ink = (img.min(axis=2) < 200).mean()
    assert 0.01 < ink < 0.6, f"screenshot looks blank or flooded ({ink:.3f} of pixels dark)"
    red = (np.abs(img - np.array([214, 39, 40])).max(axis=2) <= 30).sum()  # the verdict box and the trajectory
    assert red > 200
