"""The ``fingerprint index`` command: build and describe served-window indexes.

``fingerprint index build SERVED... --out X.idx`` indexes the context windows of the owner's
served outputs (:mod:`fingerprint.scale.index`); ``verify --served X.idx`` then scores only the
suspect's tuples whose window the owner served. ``fingerprint index info X.idx`` prints what an
index holds. Argument parsing and printing only.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from ..errors import ParameterError
from .index import DEFAULT_BUCKETS, WindowIndex

__all__ = ["add_index_parser", "run_index"]

DEFAULT_WIDTH = 2


def _say(msg: str) -> None:
    print(f"  .. {msg}", file=sys.stderr, flush=True)


def _n(count: int, word: str) -> str:
    """``1 file``, ``2 files``."""
    return f"{count:,} {word if count == 1 else word + 's'}"


def add_index_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``index build`` and ``index info`` to the ``fingerprint`` command's subparsers."""
    ix = subparsers.add_parser(
        "index", help="build or describe a served-window index (verify --served X.idx)",
        description="A served-window index holds the context windows of your served outputs (billions of "
                    "tokens, built out of core, optionally on Dask, growing by --append). `verify --served X.idx` "
                    "then scores only the suspect's tuples whose window you served.")
    ix_sub = ix.add_subparsers(dest="index_command", required=True, metavar="ACTION")

    b = ix_sub.add_parser(
        "build", help="index the windows of served outputs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Index the context windows of the responses in the owner's served outputs. The index equals "
                    "the window set `verify --served FILES` builds in memory from the same files.",
        epilog="inputs: JSONL {\"id\", \"response\"} (no prompt needed), evidence or text files, Parquet files\n"
               "(a response text column, or a token-id column), directories or globs of them.\n"
               "exit codes: 0 index written, 2 bad input or parameters.")
    b.add_argument("inputs", nargs="+", metavar="INPUT", help="served outputs: files, directories or globs")
    b.add_argument("--out", required=True, metavar="X.idx",
                   help="the index directory (new or empty; with --append, an existing index)")
    tok = b.add_mutually_exclusive_group(required=True)
    tok.add_argument("--tokenizer", help="the owner's tokenizer.json, or a tiktoken rank file (needs "
                                         "fingerprint[tiktoken]): tokenizes text responses (its SHA-256 is "
                                         "recorded)")
    tok.add_argument("--token-column", metavar="NAME",
                     help="Parquet: a column of response token ids (the owner's vocabulary) instead of text")
    b.add_argument("--tiktoken-pattern", help="pre-tokenization regex for a tiktoken rank file (default: Qwen's)")
    b.add_argument("--vocab-size", type=int, metavar="V",
                   help="V: the width of the model's logits, as in keygen --vocab-size and the key file (window "
                        "ids depend on it; default: the key's, so required unless --key is given)")
    b.add_argument("--key", metavar="KEY",
                   help="take V and the context width from this key file, the secret is not used (default: none; "
                        "then --vocab-size is required)")
    b.add_argument("--allow-insecure-key", action="store_true",
                   help="use key files that others can write (refused otherwise)")
    b.add_argument("--context-width", "-H", type=int, action="append", dest="widths", metavar="H",
                   help="a context width to index; repeat for several (default: the key's width, else "
                        f"{DEFAULT_WIDTH}; with --append, the index's widths)")
    b.add_argument("--append", action="store_true",
                   help="add these files to an existing index as a new generation (same V, widths and "
                        "tokenizer; files already indexed are refused)")
    b.add_argument("--buckets", type=int, metavar="B",
                   help=f"shards per width and generation, fixed when the index is created (default "
                        f"{DEFAULT_BUCKETS}; with --append, the index's)")
    b.add_argument("--dask", metavar="SPEC",
                   help="build on Dask: local (one worker per core), local:N, or a scheduler address "
                        "tcp://host:8786 whose workers see --out and the inputs (default: in this process)")
    b.add_argument("--worker-memory", metavar="SIZE",
                   help="with --dask local[:N]: each worker's memory limit, e.g. 2GiB (Dask spills to disk "
                        "above 60%% of it; default: the machine's memory shared among the workers)")
    b.add_argument("--response-column", default="response",
                   help="Parquet: the response text column (default response)")
    b.add_argument("--skip-invalid", action="store_true",
                   help="skip malformed records (counted in the index's sources) instead of stopping")
    b.add_argument("--quiet", "-q", action="store_true", help="no progress messages on stderr")
    b.set_defaults(func=run_index)

    i = ix_sub.add_parser("info", help="describe an index: widths, windows, generations, sources, size",
                          description="Print what a served-window index holds.")
    i.add_argument("index", metavar="X.idx", help="the index directory")
    i.set_defaults(func=run_index)
    return ix


def run_index(args: argparse.Namespace) -> int:
    """Run ``index build`` or ``index info``; returns 0. Errors are raised as
    :class:`~fingerprint.errors.FingerprintError` subclasses."""
    if args.index_command == "build":
        return _build(args)
    return _info(args)


def _key_settings(path: str, allow_insecure: bool = False) -> tuple[int, int]:
    from ..keys import FingerprintKey

    key = FingerprintKey.load(path, allow_insecure=allow_insecure)
    return key.vocab_size, key.scheme_object().context_width


def _build(args: argparse.Namespace) -> int:
    from ..tokenize import load_tokenizer
    from .cluster import connect
    from .index import build_index, is_index
    from .sources import Columns

    progress: Callable[[str], None] | None = None if args.quiet else _say
    vocab, widths = args.vocab_size, args.widths
    if args.key:
        key_vocab, key_width = _key_settings(args.key, args.allow_insecure_key)
        if vocab is not None and vocab != key_vocab:
            raise ParameterError(f"--vocab-size {vocab} differs from the key's vocab_size {key_vocab} ({args.key})")
        vocab = key_vocab
        widths = widths or [key_width]
    buckets = args.buckets
    if args.append and is_index(args.out):
        existing = WindowIndex.open(args.out)
        widths = widths or list(existing.widths)
        buckets = buckets or existing.buckets
    widths = widths or [DEFAULT_WIDTH]
    if vocab is None:
        raise ParameterError("give --vocab-size V (the width of the model's logits, as in the key) or --key KEY")
    if args.token_column:
        columns = Columns(response=None, tokens=args.token_column)
        tokenizer = None
    else:
        columns = Columns(response=args.response_column)
        tokenizer = load_tokenizer(args.tokenizer, tiktoken_pattern=args.tiktoken_pattern)
    engine = connect(args.dask, memory_limit=args.worker_memory) if args.dask else None
    try:
        if engine is not None:
            print(f"dask: {engine.workers} worker(s)" + (f", dashboard {engine.dashboard}" if engine.dashboard
                                                          else ""), file=sys.stderr, flush=True)
        index = build_index(args.inputs, args.out, vocab_size=vocab, widths=widths, tokenizer=tokenizer,
                            columns=columns, engine=engine, append=args.append, skip_invalid=args.skip_invalid,
                            buckets=buckets or DEFAULT_BUCKETS, tiktoken_pattern=args.tiktoken_pattern,
                            progress=progress)
    finally:
        if engine is not None:
            engine.close()
    g = index.generations[-1]
    records = sum(s["records"] for s in g.sources)
    tokens = sum(s["tokens"] for s in g.sources)
    skipped = sum(s.get("skipped", 0) for s in g.sources)
    print(f"wrote {index.path}: generation {g.number}, {_n(len(g.sources), 'file')}, {_n(records, 'response')}, "
          f"{_n(tokens, 'token')}" + (f", {_n(skipped, 'record')} skipped" if skipped else ""))
    for h in index.widths:
        print(f"  h={h}: {_n(g.windows[h], 'new window')}, {index.n_windows(h):,} in all")
    return 0


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _info(args: argparse.Namespace) -> int:
    index = WindowIndex.open(args.index)
    tok = "none (built from token ids)" if index.tokenizer_sha256 is None else f"sha256 {index.tokenizer_sha256}"
    print(f"index        {index.path}")
    print(f"vocab_size   {index.vocab_size:,}")
    print(f"tokenizer    {tok}")
    print(f"buckets      {index.buckets}")
    print(f"widths       {', '.join(str(h) for h in index.widths)}")
    for h in index.widths:
        print(f"  h={h}: {_n(index.n_windows(h), 'window')}")
    print(f"generations  {len(index.generations)}")
    for g in index.generations:
        tokens = sum(s["tokens"] for s in g.sources)
        added = ", ".join(f"h={h}: +{g.windows[h]:,}" for h in index.widths)
        print(f"  {g.number}: {g.created_at}  {_n(len(g.sources), 'file')}, {_n(tokens, 'token')}; {added}")
    sources = index.sources
    print(f"sources      {len(sources)}")
    for s in sources:
        print(f"  {s['path']}  sha256 {s['sha256'][:16]}  {_n(s['records'], 'response')}, {_n(s['tokens'], 'token')}"
              + (f", {s['skipped']:,} skipped" if s.get("skipped") else ""))
    print(f"size on disk {_size(index.nbytes)} ({index.nbytes:,} bytes)")
    return 0
