"""The ``fingerprint`` command: argument parsing and printing only."""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Sequence

from . import __version__
from .errors import FingerprintError
from .keys import FingerprintKey
from .schemes import SCHEMES

EXIT_OK = 0
EXIT_BAD_INPUT = 2


def _progress(msg: str) -> None:
    print(f"  .. {msg}", file=sys.stderr, flush=True)


def _cmd_keygen(args: argparse.Namespace) -> int:
    params = {}
    for name in ("context_width", "gamma", "delta", "layers"):
        value = getattr(args, name)
        if value is not None:
            if name not in SCHEMES[args.scheme].defaults:
                raise FingerprintError(f"--{name.replace('_', '-')} does not apply to scheme {args.scheme!r}")
            params[name] = value
    key = FingerprintKey.generate(args.scheme, vocab_size=args.vocab_size, **params)
    key.save(args.out, overwrite=args.force)
    print(f"wrote {args.out} (mode 0600)")
    print(f"key_id     {key.key_id}")
    print(f"scheme     {key.scheme} {key.params}")
    print(f"vocab_size {key.vocab_size}")
    return EXIT_OK


def _fmt_log10(lp: float) -> str:
    return f"1e{lp:.1f}" if lp < -4 else f"{10 ** lp:.3g}"


def _cmd_demo(args: argparse.Namespace) -> int:
    from .sim.roundtrip import run_roundtrip
    from .sim.teacher import build_teacher

    t0 = time.perf_counter()
    _progress("building the teacher (BPE tokenizer + n-gram model on packaged English text; cached)")
    teacher = build_teacher(args.corpus, vocab_size=args.vocab_size)
    _progress(f"teacher ready: vocab {teacher.vocab_size}, {teacher.tokens.size:,} corpus tokens "
              f"({time.perf_counter() - t0:.1f}s)")
    rows = run_roundtrip(teacher, n_prompts=args.prompts, tokens_per_response=args.tokens,
                         seed=args.seed, progress=_progress)
    alpha = args.alpha
    print()
    print(f"Round trip: {args.prompts} prompts x {args.tokens} tokens per scheme; "
          f"verdict at alpha = {alpha:g}")
    header = f"{'scheme':<11} {'text':<14} {'scored':>7} {'p-value':>10} {'effect [95% CI]':>28}  verdict"
    print(header)
    print("-" * len(header))
    ok = True
    for r in rows:
        for label, res, counts, should in (("fingerprinted", r.fingerprinted, r.fingerprinted_counts, True),
                                           ("plain", r.plain, r.plain_counts, False)):
            detected = res.log10_pvalue <= math.log10(alpha)
            ok &= detected == should
            eff = res.effect
            ci = f"{eff.value:+.3f} [{eff.ci_low:+.3f}, {eff.ci_high:+.3f}]"
            print(f"{r.scheme:<11} {label:<14} {counts.scored:>7} {_fmt_log10(res.log10_pvalue):>10} "
                  f"{ci:>28}  {'detected' if detected else 'not detected'}")
    print(f"\n{'all as expected' if ok else 'UNEXPECTED verdict(s) above'} "
          f"({time.perf_counter() - t0:.1f}s)")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fingerprint",
        description="Prove or rule out that a suspect model was trained on your model's outputs: "
                    "embed a keyed statistical fingerprint when sampling, then test suspect text "
                    "for it with exact, de-duplicated statistics.")
    parser.add_argument("--version", action="version", version=f"fingerprint {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    kg = sub.add_parser("keygen", help="create a secret fingerprint key (JSON, mode 0600)",
                        description="Create a secret fingerprint key from the OS CSPRNG. Scheme options "
                                    "not given take the scheme's defaults.")
    kg.add_argument("--scheme", required=True, choices=sorted(SCHEMES),
                    help="greenlist (Kirchenbauer et al.), gumbel (Aaronson), tournament (SynthID-Text)")
    kg.add_argument("--vocab-size", type=int, required=True,
                    help="width of the model's logits (token ids are in [0, V))")
    kg.add_argument("--out", required=True, help="key file to write (refuses to overwrite without --force)")
    kg.add_argument("--force", action="store_true", help="overwrite an existing key file")
    kg.add_argument("--context-width", "-H", type=int, help="h: context tokens per window (default 2)")
    kg.add_argument("--gamma", type=float, help="greenlist: green fraction (default 0.25)")
    kg.add_argument("--delta", type=float, help="greenlist: logit bias of green tokens (default 3.0)")
    kg.add_argument("--layers", type=int, help="tournament: number of g-layers m (default 30)")
    kg.set_defaults(func=_cmd_keygen)

    demo = sub.add_parser("demo", help="round trip on the embedded default: keygen, fingerprinted "
                                       "sampling, verification",
                          description="Train (or reuse) a small n-gram teacher on English text from OS "
                                      "packages, answer prompts with and without each scheme's "
                                      "fingerprint, and test both against the key.")
    demo.add_argument("--corpus", nargs="+", help="text files to train on instead of the packaged text")
    demo.add_argument("--prompts", type=int, default=8, help="prompts per scheme (default 8)")
    demo.add_argument("--tokens", type=int, default=50, help="tokens per response (default 50)")
    demo.add_argument("--vocab-size", type=int, default=8192, help="BPE vocabulary (default 8192)")
    demo.add_argument("--alpha", type=float, default=1e-6, help="significance level (default 1e-6)")
    demo.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except FingerprintError as exc:
        print(f"fingerprint: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("fingerprint: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
