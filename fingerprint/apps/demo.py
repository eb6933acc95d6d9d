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
import json
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
from ..sim.server import ServedModel, serve
from ..sim.teacher import build_teacher
from ..verify import KeyResult, VerifyOptions, verify_exchanges

__all__ = ["DemoRow", "run_demo"]


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


def _load_or_make_key(out: Path, vocab_size: int) -> FingerprintKey:
    path = out / "key.json"
    if path.exists():
        try:
            key = FingerprintKey.load(path)
            if key.vocab_size == vocab_size and key.scheme == "greenlist":
                return key
        except KeyFileError:
            pass
        path.unlink()
    key = FingerprintKey.generate("greenlist", vocab_size=vocab_size, context_width=2, gamma=0.25, delta=3.0)
    key.save(path)
    return key


def _served_outputs(out: Path, teacher, key: FingerprintKey, n_tokens: int, seed: int,
                    say: Callable[[str], None]) -> FingerprintedData:
    path = out / "served.jsonl"
    meta = out / "served.meta.json"
    want = {"key_id": key.key_id, "n_tokens": n_tokens, "seed": seed}
    if path.exists() and meta.exists() and json.loads(meta.read_text()) == want:
        prompts, responses = [], []
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            prompts.append(np.asarray(rec["prompt_ids"], dtype=np.int64))
            responses.append(np.asarray(rec["response_ids"], dtype=np.int64))
        say(f"reusing the teacher's {sum(r.size for r in responses):,} fingerprinted tokens ({path})")
        return FingerprintedData(prompts, responses)
    say(f"teacher answers distillation queries through the fingerprint: {n_tokens:,} tokens")
    data = fingerprinted_responses(teacher, key.scheme_object(), n_tokens, rng=np.random.default_rng(seed))
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
    """Run the investigation; artifacts go to ``out``. Returns one row per suspect."""
    say = progress or (lambda _m: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    say("teacher: BPE tokenizer + trigram model on packaged English text (cached)")
    teacher = build_teacher(corpus)
    tok_path = teacher.tokenizer.source
    key = _load_or_make_key(out, teacher.vocab_size)
    say(f"key {key.key_id[:12]}: greenlist h=2 gamma=0.25 delta=3 ({out / 'key.json'}, mode 0600)")

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
    rows = []
    for name, model, r in (("student", student, reached), ("control", control, 0.0)):
        evidence = out / f"evidence-{name}.jsonl"
        for stale in (evidence, manifest_path(evidence)):
            if stale.exists():
                stale.unlink()
        with serve(ServedModel(model, teacher.tokenizer, name=f"suspect-{name}")) as srv:
            say(f"{name}: serving on {srv.url}; collecting {n_queries} x {query_tokens} tokens over HTTP")
            settings = CollectSettings(base_url=srv.url, model=f"suspect-{name}",
                                       sampling={"max_tokens": query_tokens, "temperature": 1.0})
            asyncio.run(collect(prompt_records, settings, evidence, limits=ClientLimits(concurrency=8),
                                signer=EvidenceSigner.from_file(investigator)))
        say(f"{name}: verifying with {decoys} decoy keys")
        suspect_set = read_exchanges([evidence])
        opts = VerifyOptions(alpha=alpha, n_decoys=decoys, decoy_seed=seed)
        res = verify_exchanges(suspect_set, teacher.tokenizer, [key], options=opts)
        sup = verify_exchanges(suspect_set, teacher.tokenizer, [key], options=opts, served=served_set)
        custody = check_inputs([str(evidence)], public_keys=[public])  # signed by the investigator, intact
        doc = build_report(res, suspect=suspect_set, tokenizer_path=tok_path, tokenizer_sha256=sha256_file(tok_path))
        doc["custody"] = custody.to_dict()
        doc["notes"][:0] = custody.notes()
        rj, rh = out / f"report-{name}.json", out / f"report-{name}.html"
        write_json(doc, rj)
        write_text(render_markdown(doc), out / f"report-{name}.md")
        write_text(render_html(doc), rh)
        rows.append(DemoRow(name, r, evidence, res.results[0], sup.results[0], rh, rj, res.n_tokens))
    say(f"done in {time.perf_counter() - t0:.0f}s")
    return rows
