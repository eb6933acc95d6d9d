"""fingerprint against its peers, side by side on the same token ids: one command, one table.

    python benchmarks/peers.py                  # vocab 8k and 50k, writes the table
    bash benchmarks/make_markllm_venv.sh        # once, to include MarkLLM (its own venv)

Suites (each in its own process, so its peak RSS is its own):

* ``fingerprint greenlist h=1`` — fingerprint's own KGW-style scheme (gamma 0.25, previous
  token as the window): the verify pipeline without decoys (``text_evidence`` +
  ``verify_evidence``: de-duplication, scoring, the exact test and its report fields) over N ids;
* ``fingerprint hf-kgw`` — transformers' KGW lefthash (h = 1), reproduced bit for bit;
* ``transformers WatermarkDetector`` — the same scheme and key (lefthash, context width 1,
  greenlist ratio 0.25, hashing key 15485863), run on the first P ids (it runs
  ``torch.randperm(V)`` per n-gram, so a full run would take hours);
* ``MarkLLM KGW`` — MarkLLM's KGW detector (``KGWUtils.score_sequence``; gamma 0.25, prefix 1,
  left window), in its own virtual environment, on the first P ids. MarkLLM seeds its green
  lists differently from transformers, so only its speed is compared.

Green counts: the hf-kgw suite also scores the first P ids and must give transformers' green
count exactly, both counting every token (``ignore_repeated_ngrams=False``, from the scheme's
green flags) and once per distinct (previous token, token) (``True``: the statistic the verify
pipeline tests on those ids). The ratios are tokens/s over tokens/s from this
one run. The ids are Zipf-distributed (exponent 1.2) like the words of text, in texts of 500.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
HASHING_KEY = 15485863
GAMMA = 0.25
TEXT_LEN = 500
MARKLLM_PYTHON = HERE / ".venv-markllm" / "bin" / "python"
BEGIN, END = "<!-- peers:begin -->", "<!-- peers:end -->"


def token_ids(vocab: int, n: int, seed: int = 0) -> np.ndarray:
    """``(n,)`` int64 ids in ``[0, vocab)`` with Zipf-like frequencies; same for every suite."""
    rng = np.random.default_rng(seed)
    return ((rng.zipf(1.2, n) - 1) % vocab).astype(np.int64)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- workers (each runs in its own process) ----------------------------------------------
def worker_fingerprint(vocab: int, n: int, peer_n: int, scheme_name: str) -> dict:
    from fingerprint.keys import FingerprintKey
    from fingerprint.schemes.hf_kgw import hashing_key_secret
    from fingerprint.verify import VerifyOptions, text_evidence, verify_evidence

    ids = token_ids(vocab, n)
    offsets = np.arange(0, n + 1, TEXT_LEN, dtype=np.int64)
    if offsets[-1] != n:
        offsets = np.append(offsets, n)
    if scheme_name == "hf-kgw":
        key = FingerprintKey(hashing_key_secret(HASHING_KEY), "hf-kgw",
                             {"seeding": "lefthash", "context_width": 1, "greenlist_ratio": GAMMA}, vocab)
    else:
        key = FingerprintKey(bytes(range(32)), "greenlist", {"context_width": 1, "gamma": GAMMA}, vocab)
    scheme = key.scheme_object()
    options = VerifyOptions(n_decoys=0)

    def run() -> object:
        # what `fingerprint verify` runs on token ids, without decoys: the evidence (selection,
        # de-duplication), then scoring, the scheme's exact null and the test
        evidence = text_evidence(ids, offsets, context_width=1, vocab_size=vocab)
        return verify_evidence(evidence, key, options=options).results[0].test

    rounds = 1 if scheme_name == "hf-kgw" else 3
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - t0)
    seconds = float(np.median(times))
    out = {"suite": f"fingerprint {scheme_name}", "tokens": n, "seconds": seconds, "tokens_per_s": n / seconds,
           "n_tested": int(result.n)}
    if scheme_name == "hf-kgw":
        sub = ids[:peer_n]
        # every token (transformers' ignore_repeated_ngrams=False): the scheme's green flags
        out["green_all"] = int(scheme.green_flags(sub[:-1, None], sub[1:]).sum())
        # once per distinct (previous token, token) (ignore_repeated_ngrams=True): the statistic the
        # pipeline tests on the same ids as one text
        sub_test = verify_evidence(text_evidence(sub, np.array([0, sub.size]), context_width=1, vocab_size=vocab),
                                   key, options=options).results[0].test
        out["green_distinct"] = int(sub_test.statistic)
    out["peak_rss_mib"] = _peak_rss_mib()
    return out


def worker_transformers(vocab: int, n: int) -> dict:
    import torch
    import transformers
    from transformers import GPT2Config, WatermarkDetector, WatermarkingConfig

    ids = torch.from_numpy(token_ids(vocab, n))[None, :]
    cfg = WatermarkingConfig(greenlist_ratio=GAMMA, hashing_key=HASHING_KEY, seeding_scheme="lefthash", context_width=1)
    out = {"suite": "transformers WatermarkDetector", "tokens": n, "transformers": transformers.__version__,
           "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    for ignore in (False, True):
        model_config = GPT2Config(vocab_size=vocab, bos_token_id=0, eos_token_id=0)
        detector = WatermarkDetector(model_config=model_config, device="cpu", watermarking_config=cfg,
                                     ignore_repeated_ngrams=ignore)
        t0 = time.perf_counter()
        res = detector(ids, return_dict=True)
        seconds = time.perf_counter() - t0
        if not ignore:
            out.update(seconds=seconds, tokens_per_s=n / seconds, green_all=int(res.num_green_tokens[0]))
        else:
            out["green_distinct"] = int(res.num_green_tokens[0])
    out["peak_rss_mib"] = _peak_rss_mib()
    return out


def worker_markllm(vocab: int, n: int) -> dict:
    import os as _os

    import markllm
    import torch
    from markllm.utils.transformers_config import TransformersConfig
    from markllm.watermark.kgw.kgw import KGWConfig, KGWUtils

    config = KGWConfig(_os.path.join(_os.path.dirname(markllm.__file__), "config", "KGW.json"),
                       TransformersConfig(model=None, tokenizer=None, vocab_size=vocab, device="cpu"))
    config.gamma = GAMMA
    utils = KGWUtils(config)
    ids = torch.from_numpy(token_ids(vocab, n))
    t0 = time.perf_counter()
    _, flags = utils.score_sequence(ids)
    seconds = time.perf_counter() - t0
    return {"suite": "MarkLLM KGW", "tokens": n, "seconds": seconds, "tokens_per_s": n / seconds,
            "green_all": int(sum(f == 1 for f in flags)), "markllm": getattr(markllm, "__version__", "0.1.5"),
            "peak_rss_mib": _peak_rss_mib()}


WORKERS = {"fingerprint-greenlist": lambda a: worker_fingerprint(a.vocab, a.tokens, a.peer_tokens, "greenlist"),
           "fingerprint-hf-kgw": lambda a: worker_fingerprint(a.vocab, a.tokens, a.peer_tokens, "hf-kgw"),
           "transformers": lambda a: worker_transformers(a.vocab, a.peer_tokens),
           "markllm": lambda a: worker_markllm(a.vocab, a.markllm_tokens)}


# ---- driver ------------------------------------------------------------------------------
def _run_worker(python: str, name: str, args: argparse.Namespace, vocab: int) -> dict:
    cmd = [python, str(Path(__file__).resolve()), "--worker", name, "--vocab", str(vocab), "--tokens",
           str(args.tokens), "--peer-tokens", str(args.peer_tokens), "--markllm-tokens", str(args.markllm_tokens)]
    print(f"  .. {name} (vocab {vocab:,})", file=sys.stderr, flush=True)
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if res.returncode != 0:
        raise RuntimeError(f"suite {name} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Python {platform.python_version()}, numpy {np.__version__}"


def table_markdown(rows: list[dict], machine: str, command: str) -> str:
    header = ("| vocab | suite | tokens timed | tokens/s | x transformers | peak RSS (MiB) "
              "| green count = transformers' |")
    lines = [header, "|---|---|---|---|---|---|---|"]
    for vocab in sorted({r["vocab"] for r in rows}):
        group = [r for r in rows if r["vocab"] == vocab]
        hf = next((r for r in group if r["suite"].startswith("transformers")), None)
        for r in group:
            x = r["tokens_per_s"] / hf["tokens_per_s"] if hf else float("nan")
            ratio = "n/a" if not hf else f"{x:,.0f}x" if x >= 10 else f"{x:.2f}x"
            same = ""
            if r["suite"] == "fingerprint hf-kgw" and hf:
                ok = r["green_all"] == hf["green_all"] and r["green_distinct"] == hf["green_distinct"]
                same = (f"{'yes' if ok else 'NO'}: {r['green_all']:,} of all, {r['green_distinct']:,} distinct "
                        f"(first {hf['tokens']:,} ids)")
            lines.append(f"| {vocab:,} | {r['suite']} | {r['tokens']:,} | {r['tokens_per_s']:,.0f} | {ratio} | "
                         f"{r['peak_rss_mib']:,.0f} | {same} |")
    lines += ["", f"Machine: {machine}. Command: `{command}`."]
    return "\n".join(lines)


def write_table(markdown: str, readme: Path) -> None:
    text = readme.read_text(encoding="utf-8") if readme.exists() else ""
    block = f"{BEGIN}\n{markdown}\n{END}"
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n## Peers, side by side\n\n" + block + "\n"
    readme.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocab", type=int, nargs="+", default=[8192, 50257], help="vocabulary sizes (default 8k, 50k)")
    p.add_argument("--tokens", type=int, default=1_000_000, help="ids timed for fingerprint (default 1M)")
    p.add_argument("--peer-tokens", type=int, default=200_000, help="ids timed for transformers (default 200k)")
    p.add_argument("--markllm-tokens", type=int, default=20_000, help="ids timed for MarkLLM (default 20k)")
    p.add_argument("--markllm-python", default=str(MARKLLM_PYTHON),
                   help="python of MarkLLM's venv (made by make_markllm_venv.sh); skipped if missing")
    p.add_argument("--out", default=str(HERE / "results" / "peers.json"), help="JSON results")
    p.add_argument("--readme", nargs="+", default=[str(HERE / "README.md"), str(HERE.parent / "README.md")],
                   help="READMEs whose peers block gets the table (default: benchmarks/README.md and README.md)")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        vocab = args.vocab[0]
        args.vocab = vocab
        print(json.dumps({**WORKERS[args.worker](args), "vocab": vocab}))
        return 0
    rows = []
    for vocab in args.vocab:
        for name in ("fingerprint-greenlist", "fingerprint-hf-kgw", "transformers"):
            rows.append({**_run_worker(sys.executable, name, args, vocab), "vocab": vocab})
        if Path(args.markllm_python).exists():
            rows.append({**_run_worker(args.markllm_python, "markllm", args, vocab), "vocab": vocab})
        else:
            print(f"  .. MarkLLM skipped: {args.markllm_python} missing (bash benchmarks/make_markllm_venv.sh)",
                  file=sys.stderr)
    command = " ".join(["python benchmarks/peers.py", *(sys.argv[1:] if argv is None else argv)])
    markdown = table_markdown(rows, _machine(), command)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": _machine(), "rows": rows}, indent=2) + "\n")
    for readme in args.readme:
        write_table(markdown, Path(readme))
    print(markdown)
    hf_kgw = [r for r in rows if r["suite"] == "fingerprint hf-kgw"]
    hf = {r["vocab"]: r for r in rows if r["suite"].startswith("transformers")}
    mismatched = [r["vocab"] for r in hf_kgw if (r["green_all"], r["green_distinct"]) !=
                  (hf[r["vocab"]]["green_all"], hf[r["vocab"]]["green_distinct"])]
    if mismatched:
        print(f"green counts differ from transformers' at vocab {mismatched}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
