"""The embedded default investigation, end to end on this machine.

1. a teacher (BPE tokenizer + n-gram model on packaged English text) and a secret key;
2. the teacher answers distillation queries through the fingerprint: the owner's served
   outputs (``served.jsonl``);
3. two suspects: a student distilled with ``rho`` of its training tokens from those outputs,
   and a control student (rho = 0) trained on the same clean text only;
4. both served over an OpenAI-compatible API on 127.0.0.1; their answers to fresh prompts
   collected with the evidence collector (``evidence-*.jsonl``);
5. each evidence file verified with decoy keys, text only and with the served-window filter;
   JSON, Markdown and HTML reports written next to the evidence.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..collect.client import ClientLimits, CollectSettings, PromptRecord, collect
from ..collect.custody import EvidenceSigner, check_inputs, generate_signing_key, load_public_key, public_key_path
from ..collect.evidence import manifest_path
from ..corpus import read_exchanges, sha256_file
from ..errors import KeyFileError
from ..keys import FingerprintKey
from ..report import build_report, render_html, render_markdown, write_json, write_text
from ..sim.distill import FingerprintedData, corpus_prompts, distill_student, fingerprinted_responses
from ..sim.server import ServedModel, serve_in_process
from ..sim.teacher import build_teacher
from ..verify import KeyResult, VerifyOptions, verify_exchanges

__all__ = ["DemoRow", "run_demo", "demo_key", "GENERATION_PARTS"]

#: The teacher's answers are generated in this many slices, one process each where the platform
#: forks: fixed, so that the output does not depend on the machine's core count.
GENERATION_PARTS = 2
#: Rows per sampling step: (64, 8192) arrays stay in cache (faster than 512 on this machine).
GENERATION_BATCH = 64


@dataclass(frozen=True)
class DemoRow:
    suspect: str
    rho: float
    evidence: Path
    text_only: KeyResult
    supervised: KeyResult
    report_html: Path
    report_json: Path
    tokens_collected: int


def demo_key(vocab_size: int, seed: int) -> FingerprintKey:
    """The demo's key, derived from its seed so that a run reproduces every number.

    A demo key is public by construction (anyone with the seed has it); real keys come from
    ``fingerprint keygen`` (the operating system's randomness)."""
    secret = hashlib.sha256(f"fingerprint demo key, seed {seed}".encode()).digest()
    return FingerprintKey(secret, "greenlist", {"context_width": 2, "gamma": 0.25, "delta": 3.0}, vocab_size)


def _write_key(out: Path, key: FingerprintKey) -> None:
    path = out / "key.json"
    if path.exists():
        try:
            if FingerprintKey.load(path).key_id == key.key_id:
                return
        except KeyFileError:
            pass
        path.unlink()
    key.save(path)


def _served_outputs(out: Path, teacher, key: FingerprintKey, n_tokens: int, seed: int,
                    say: Callable[[str], None]) -> FingerprintedData:
    path = out / "served.jsonl"
    meta = out / "served.meta.json"
    want = {"key_id": key.key_id, "n_tokens": n_tokens, "seed": seed, "parts": GENERATION_PARTS,
            "batch_size": GENERATION_BATCH}
    if path.exists() and meta.exists() and json.loads(meta.read_text()) == want:
        prompts, responses = [], []
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            prompts.append(np.asarray(rec["prompt_ids"], dtype=np.int64))
            responses.append(np.asarray(rec["response_ids"], dtype=np.int64))
        say(f"reusing the teacher's {sum(r.size for r in responses):,} fingerprinted tokens ({path})")
        return FingerprintedData(prompts, responses)
    say(f"teacher answers distillation queries through the fingerprint: {n_tokens:,} tokens")
    data = fingerprinted_responses(teacher, key.scheme_object(), n_tokens, rng=np.random.default_rng(seed),
                                   parts=GENERATION_PARTS, batch_size=GENERATION_BATCH)
    dec = teacher.tokenizer.decode
    with open(path, "w", encoding="utf-8") as fh:
        for i, (p, r) in enumerate(zip(data.prompts, data.responses)):
            fh.write(json.dumps({"id": f"served-{i}", "prompt": dec(p), "response": dec(r),
                                 "prompt_ids": p.tolist(), "response_ids": r.tolist()}) + "\n")
    meta.write_text(json.dumps(want))
    return data


def run_demo(out: str | Path = "fingerprint-demo", *, corpus: list[str] | None = None, rho: float = 0.10,
             clean_fraction: float = 0.5, n_queries: int = 200, query_tokens: int = 100, decoys: int = 100,
             alpha: float = 1e-6, seed: int = 0, progress: Callable[[str], None] | None = None) -> list[DemoRow]:
    """Run the investigation; artifacts go to ``out``. Returns one row per suspect.

    Every number depends only on the arguments: the key derives from ``seed``, the teacher's
    answers come from ``seed`` in :data:`GENERATION_PARTS` slices, and the suspects' servers
    seed each answer from ``seed`` and the prompt."""
    say = progress or (lambda _m: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    say("teacher: BPE tokenizer + trigram model on packaged English text (cached)")
    teacher = build_teacher(corpus)
    tok_path = out / "tokenizer.json"  # the folder holds everything a re-verification needs
    shutil.copyfile(teacher.tokenizer.source, tok_path)
    key = demo_key(teacher.vocab_size, seed)
    _write_key(out, key)
    say(f"key {key.key_id[:12]}: greenlist h=2 gamma=0.25 delta=3, derived from --seed {seed} "
        f"({out / 'key.json'}, mode 0600; real keys come from `fingerprint keygen`)")

    rng = np.random.default_rng(seed)
    n_par = teacher.offsets.size - 1
    clean_par = np.sort(rng.choice(n_par, size=int(n_par * clean_fraction), replace=False))
    lens = np.diff(teacher.offsets)[clean_par]
    clean_tokens = np.concatenate([teacher.tokens[teacher.offsets[i]:teacher.offsets[i + 1]] for i in clean_par])
    clean_offsets = np.concatenate(([0], np.cumsum(lens))).astype(np.int64)
    need = int(np.ceil(rho * clean_tokens.size / (1 - rho))) if rho < 1 else clean_tokens.size
    data = _served_outputs(out, teacher, key, need, seed, say)

    say(f"distilling: student at rho = {rho:.0%} and control at rho = 0 (trigram students)")
    student, reached = distill_student(clean_tokens, clean_offsets, data, rho, vocab_size=teacher.vocab_size)
    control, _ = distill_student(clean_tokens, clean_offsets, data, 0.0, vocab_size=teacher.vocab_size)
    suspects = (("student", student, reached), ("control", control, 0.0))
    for name, model, _r in suspects:
        model.save(out / f"{name}.npz")  # `fingerprint serve --model-file` serves it again (NEXT.md)

    queries, _ = corpus_prompts(teacher, n_queries, length=12, rng=np.random.default_rng(seed + 1))
    prompts_path = out / "queries.jsonl"
    prompt_records = [PromptRecord(f"q{i}", messages=[{"role": "user", "content": teacher.tokenizer.decode(q)}])
                      for i, q in enumerate(queries)]
    with open(prompts_path, "w", encoding="utf-8") as fh:
        for p in prompt_records:
            fh.write(json.dumps({"id": p.id, "messages": p.messages}) + "\n")

    served_set = read_exchanges([out / "served.jsonl"], require_prompt=False)
    investigator = out / "investigator.key"  # signs the evidence's checkpoints (chain of custody)
    if not investigator.exists():
        generate_signing_key(investigator)
    public = load_public_key(public_key_path(investigator))
    evidence = {name: out / f"evidence-{name}.jsonl" for name, _m, _r in suspects}
    for path in evidence.values():
        for stale in (path, manifest_path(path)):
            if stale.exists():
                stale.unlink()
    say(f"serving both suspects on 127.0.0.1 (one process each); collecting {n_queries} x {query_tokens} "
        f"tokens from each over HTTP")
    with contextlib.ExitStack() as stack:
        urls = {name: stack.enter_context(serve_in_process(ServedModel(model, teacher.tokenizer,
                                                                       name=f"suspect-{name}")))
                for name, model, _r in suspects}

        async def collect_all() -> None:
            await asyncio.gather(*(
                collect(prompt_records, _collect_settings(urls[name], f"suspect-{name}", query_tokens, seed),
                        evidence[name], limits=ClientLimits(concurrency=8),
                        signer=EvidenceSigner.from_file(investigator))
                for name, _m, _r in suspects))

        asyncio.run(collect_all())
    rows = []
    for name, model, r in suspects:
        say(f"{name}: verifying with {decoys} decoy keys, text only and on served windows")
        suspect_set = read_exchanges([evidence[name]])
        opts = VerifyOptions(alpha=alpha, n_decoys=decoys, decoy_seed=seed)
        res = verify_exchanges(suspect_set, teacher.tokenizer, [key], options=opts)
        sup = verify_exchanges(suspect_set, teacher.tokenizer, [key], options=opts, served=served_set)
        custody = check_inputs([str(evidence[name])], public_keys=[public])  # signed by the investigator, intact
        doc = build_report(res, suspect=suspect_set, tokenizer_path=str(tok_path),
                           tokenizer_sha256=sha256_file(tok_path), served=served_set, served_result=sup)
        doc["custody"] = custody.to_dict()
        doc["notes"][:0] = custody.notes()
        rj, rh = out / f"report-{name}.json", out / f"report-{name}.html"
        write_json(doc, rj)
        write_text(render_markdown(doc), out / f"report-{name}.md")
        write_text(render_html(doc), rh)
        rows.append(DemoRow(name, r, evidence[name], res.results[0], sup.results[0], rh, rj, res.n_tokens))
    write_text(next_steps(out, decoys=decoys, alpha=alpha, seed=seed, n_queries=n_queries,
                          query_tokens=query_tokens), out / "NEXT.md")
    say(f"done in {time.perf_counter() - t0:.0f}s")
    return rows


def _collect_settings(url: str, model: str, query_tokens: int, seed: int) -> CollectSettings:
    return CollectSettings(base_url=url, model=model,
                           sampling={"max_tokens": query_tokens, "temperature": 1.0, "seed": seed})


def next_steps(out: Path, *, decoys: int, alpha: float, seed: int, n_queries: int, query_tokens: int) -> str:
    """``NEXT.md``: the exact commands to re-verify, re-collect and open the reports, with paths
    as the demo was given them (run them from the directory the demo ran in)."""
    o = shlex.quote(str(out))
    common = (f"--key {o}/key.json --tokenizer {o}/tokenizer.json --public-key {o}/investigator.pub "
              f"--decoys {decoys} --decoy-seed {seed} --alpha {alpha:g}")
    return f"""# What to do next with `{out}`

Everything the demo made is in this folder: the key (`key.json`, mode 0600; derived from `--seed {seed}`,
so a demo key, not a secret), the tokenizer (`tokenizer.json`), the teacher's fingerprinted served
outputs (`served.jsonl`), the two suspects (`student.npz`, `control.npz`: trigram models), the
queries (`queries.jsonl`), the signed evidence (`evidence-*.jsonl` with `*.manifest.json`), the
investigator's signing key pair and the reports (`report-*.json|md|html`).

Run these from the directory you ran `fingerprint demo` in.

## Re-verify

The same numbers as the demo (text only, then only windows the teacher served):

```bash
fingerprint verify {o}/evidence-student.jsonl {common} --html {o}/reverify-student.html --json {o}/reverify-student.json
fingerprint verify {o}/evidence-student.jsonl {common} --served {o}/served.jsonl
fingerprint verify {o}/evidence-control.jsonl {common}
```

## Check the chain of custody

```bash
fingerprint evidence verify {o}/evidence-student.jsonl --public-key {o}/investigator.pub
fingerprint evidence summary {o}/evidence-student.jsonl
```

## Re-collect from the student

Serve it again over the OpenAI-compatible API, ask the same queries, verify the new evidence:

```bash
fingerprint serve --model-file {o}/student.npz --tokenizer {o}/tokenizer.json --model-name suspect-student --port 8011 &
server=$!
fingerprint collect {o}/queries.jsonl --base-url http://127.0.0.1:8011/v1 --model suspect-student --out {o}/recollected-student.jsonl --max-tokens {query_tokens} --temperature 1 --seed {seed} --signing-key {o}/investigator.key --quiet
kill $server
fingerprint verify {o}/recollected-student.jsonl {common}
```

(`fingerprint serve` waits until it answers before the collector's first request is retried away;
the collector retries refused connections.)

## Open the reports

`{out}/report-student.html` and `{out}/report-control.html` in a browser (`xdg-open` on Linux,
`open` on macOS); `report-*.md` read as text; `report-*.json` for programs.
"""
