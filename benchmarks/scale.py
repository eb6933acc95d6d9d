"""Verify and index at scale: single process against a Dask LocalCluster, on synthetic Parquet.

Data: Zipf-distributed token ids (exponent 1.1, vocabulary 8,192: the demo tokenizer's), 500
tokens per row, 2,000 rows per row group (1M tokens per partition), 10M tokens per file, as a
``tokens`` list<int32> column (logs kept as ids). Written once per size under the cache folder.

    python -m benchmarks.scale verify --tokens 100000000 --decoys 10     # single vs local:2
    python -m benchmarks.scale index --tokens 1000000000                  # single vs local:2

Each configuration runs in a fresh process (``_run``) that prints one JSON line: wall seconds,
tokens/s, tokens/s per core, the driver's peak RSS and every worker's peak RSS (MiB), the CPU seconds the
driver and each worker spent, and the machine's 1-minute load average before and after. Results are
appended to benchmarks/results/scale.jsonl; the README's "At scale" table comes from there.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

VOCAB = 8192
ROW_TOKENS = 500
GROUP_ROWS = 2000
FILE_TOKENS = 10_000_000
RESULTS = Path(__file__).parent / "results" / "scale.jsonl"


def data_dir(n_tokens: int, seed: int = 0) -> Path:
    """The Parquet folder of ``n_tokens`` Zipf ids (written on first use)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fingerprint.sim.english import cache_dir

    out = cache_dir() / f"bench-zipf-{n_tokens}-{seed}"
    done = out / "DONE"
    if done.is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    left, i = n_tokens, 0
    while left > 0:
        n = min(FILE_TOKENS, left)
        rows = -(-n // ROW_TOKENS)
        ids = np.minimum(rng.zipf(1.1, rows * ROW_TOKENS) - 1, VOCAB - 1).astype(np.int32)
        offsets = (np.arange(rows + 1, dtype=np.int32) * ROW_TOKENS)
        col = pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids))
        table = pa.table({"id": pa.array([f"{i}-{r}" for r in range(rows)]), "tokens": col})
        pq.write_table(table, out / f"part-{i:05d}.parquet", row_group_size=GROUP_ROWS)
        left -= rows * ROW_TOKENS
        i += 1
    done.write_text("ok\n")
    return out


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _run(kind: str, n_tokens: int, engine_spec: str | None, decoys: int, worker_memory: str | None = None) -> dict:
    """One measured configuration, in this (fresh) process."""
    from fingerprint.keys import FingerprintKey
    from fingerprint.scale.cluster import connect
    from fingerprint.scale.sources import Columns
    from fingerprint.sim.teacher import build_teacher

    tokenizer = build_teacher().tokenizer
    folder = data_dir(n_tokens)
    engine = connect(engine_spec, memory_limit=worker_memory) if engine_spec else None
    cores = engine.workers if engine is not None else 1
    columns = Columns(response=None, prompt=None, id="id", tokens="tokens")
    worker_cpu0 = engine.client.run(_cpu_s) if engine is not None else {}
    load0 = os.getloadavg()[0]
    c0 = time.process_time()
    t0 = time.perf_counter()
    out: dict = {"kind": kind, "tokens": n_tokens, "engine": engine_spec or "single-process", "cores": cores,
                 "decoys": decoys, **({"worker_memory_limit": worker_memory} if worker_memory and engine_spec else {})}
    if kind == "verify":
        from fingerprint.scale.engine import verify_partitions
        from fingerprint.verify import VerifyOptions

        key = FingerprintKey(bytes(range(32)), "greenlist", {"context_width": 2}, VOCAB)
        res = verify_partitions([str(folder)], [key], tokenizer, options=VerifyOptions(n_decoys=decoys),
                                columns=columns, engine=engine)
        r = res.result.results[0]
        out.update(partitions=res.partitions, scored=r.counts.scored, log10_pvalue=r.test.log10_pvalue)
    else:
        import shutil

        from fingerprint.scale.index import build_index

        target = folder.parent / f"{folder.name}-{engine_spec or 'single'}.idx".replace(":", "-")
        shutil.rmtree(target, ignore_errors=True)
        index = build_index([str(folder)], target, vocab_size=VOCAB, widths=[2], columns=columns, engine=engine)
        out.update(windows=index.n_windows(2), disk_mib=sum(p.stat().st_size for p in target.rglob("*")) / 2**20)
    wall = time.perf_counter() - t0
    out.update(wall_s=round(wall, 1), tokens_per_s=round(n_tokens / wall), tokens_per_s_per_core=round(n_tokens / wall / cores),
               driver_peak_mib=round(_peak_mib()), driver_cpu_s=round(time.process_time() - c0, 1))
    if engine is not None:
        out["worker_peak_mib"] = sorted(round(v) for v in engine.client.run(_peak_mib).values())
        cpu1 = engine.client.run(_cpu_s)
        out["worker_cpu_s"] = sorted(round(cpu1[w] - worker_cpu0.get(w, 0.0), 1) for w in cpu1)
    # the machine's load (1-minute average, other processes included) before and after: a shared
    # machine's wall times are not comparable to an idle one's
    out["load_avg"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    if engine is not None:
        engine.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["verify", "index", "data"])
    ap.add_argument("--tokens", type=int, default=100_000_000)
    ap.add_argument("--decoys", type=int, default=10)
    ap.add_argument("--engines", default="single,local:2", help="comma-separated: single, local:N")
    ap.add_argument("--worker-memory", help="each local worker's memory limit (e.g. 2GiB: Dask spills held results "
                                            "to disk above 60%% of it); default: the machine's memory over the workers")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # run one configuration in this process
    args = ap.parse_args(argv)
    if args.kind == "data":
        print(data_dir(args.tokens))
        return 0
    if args.one is not None:
        print(json.dumps(_run(args.kind, args.tokens, None if args.one == "single" else args.one, args.decoys,
                              args.worker_memory)))
        return 0
    data_dir(args.tokens)
    RESULTS.parent.mkdir(exist_ok=True)
    for spec in args.engines.split(","):
        res = subprocess.run([sys.executable, "-m", "benchmarks.scale", args.kind, "--tokens", str(args.tokens),
                              "--decoys", str(args.decoys), "--one", spec,
                              *(["--worker-memory", args.worker_memory] if args.worker_memory else [])],
                             capture_output=True, text=True,
                             cwd=Path(__file__).parent.parent, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if res.returncode != 0:
            print(res.stderr[-3000:], file=sys.stderr)
            return 1
        line = res.stdout.strip().splitlines()[-1]
        print(line, flush=True)
        with open(RESULTS, "a") as fh:
            fh.write(json.dumps({**json.loads(line), "date": time.strftime("%Y-%m-%d")}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
