"""The ``fingerprint`` command: argument parsing and printing only."""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Sequence

from .display import format_alpha, format_plain_p
from .errors import FingerprintError, ParameterError
from .keys import FingerprintKey
from .schemes import SCHEMES
from .version import __version__

if TYPE_CHECKING:
    from .scale.sources import Columns

#: Exit codes, the same for every command.
EXIT_OK = 0  # done (any verdict, unless a flag asks for 1)
EXIT_DETECTED = 1  # the finding: detected (--fail-on-detect), a broken chain, a strength regression
EXIT_BAD_INPUT = 2  # bad input or usage
EXIT_INTERNAL = 3  # an internal error (a bug): a one-line message; --debug shows the traceback


def _progress(msg: str) -> None:
    print(f"  .. {msg}", file=sys.stderr, flush=True)


def _n(count: int, word: str, plural: str | None = None) -> str:
    """``1 response``, ``2 responses``, ``1,024 tokens`` (``plural`` when adding an s is wrong)."""
    return f"{count:,} {word if count == 1 else plural or word + 's'}"


def _parse_param(text: str) -> tuple[str, object]:
    """``NAME=VALUE`` with VALUE read as an int, a float or else a string."""
    if "=" not in text:
        raise FingerprintError(f"--param {text!r}: expected NAME=VALUE")
    name, raw = (x.strip() for x in text.split("=", 1))
    value: object = raw
    for cast in (int, float):
        try:
            value = cast(raw)
            break
        except ValueError:
            continue
    return name, value


#: Scheme parameters with a flag of their own (any other: ``--param NAME=VALUE``).
_PARAM_FLAGS = ("context_width", "gamma", "delta", "layers", "seeding", "greenlist_ratio", "bias", "ngram_len",
                "sampling_table_size", "sampling_table_seed", "context_history_size", "depth")
#: Options that carry a toolkit's own secret (``Scheme.secret_options``).
_SECRET_FLAGS = ("hashing_key", "synthid_keys", "vllm_key")


def _cmd_keygen(args: argparse.Namespace) -> int:
    cls = SCHEMES[args.scheme]
    params: dict[str, object] = {}
    for name in _PARAM_FLAGS:
        value = getattr(args, name)
        if value is not None:
            if name not in cls.defaults:
                raise FingerprintError(f"--{name.replace('_', '-')} does not apply to scheme {args.scheme!r}")
            params[name] = value
    for text in args.param or []:
        name, value = _parse_param(text)
        if name not in cls.defaults:
            raise FingerprintError(f"--param {name}: scheme {args.scheme!r} has no parameter {name!r}; "
                                   f"known: {', '.join(sorted(cls.defaults))}")
        params[name] = value
    given = {name: getattr(args, name) for name in _SECRET_FLAGS if getattr(args, name) is not None}
    for name in given:
        if name not in cls.secret_options:
            owners = [n for n, c in SCHEMES.items() if name in c.secret_options]
            raise FingerprintError(f"--{name.replace('_', '-')} applies only to scheme(s) {', '.join(owners)}")
    if args.keyring:
        return _write_keyring(args, params, given)
    if args.cohorts is not None or args.cohorts_file or args.assign:
        raise FingerprintError("--cohorts, --cohorts-file and --assign apply only with --keyring")
    if given:
        secret, params = cls.secret_from_options(params, given)
        key = FingerprintKey(secret, args.scheme, params, args.vocab_size)
    else:
        key = FingerprintKey.generate(args.scheme, vocab_size=args.vocab_size, **params)
    key.save(args.out, overwrite=args.force)
    print(f"wrote {args.out} (mode 0600)")
    print(f"key_id     {key.key_id}")
    print(f"scheme     {key.scheme} {key.params}")
    print(f"vocab_size {key.vocab_size}")
    return EXIT_OK


def _read_cohort_ids(path: str) -> list[str]:
    """Cohort ids from a file, one per line (blank lines and lines starting with # skipped)."""
    from pathlib import Path

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FingerprintError(f"--cohorts-file {path}: cannot read ({exc})") from None
    ids = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not ids:
        raise FingerprintError(f"--cohorts-file {path}: no cohort ids (one per line)")
    return ids


def _write_keyring(args: argparse.Namespace, params: dict[str, object], given: dict[str, object]) -> int:
    from .keyring import Keyring

    if given:
        raise FingerprintError(f"--{next(iter(given)).replace('_', '-')} gives one key's secret; a keyring derives "
                               f"every cohort's key from its own master")
    if (args.cohorts is None) == (not args.cohorts_file):
        raise FingerprintError("--keyring needs exactly one of --cohorts N and --cohorts-file FILE")
    cohorts: int | list[str] = args.cohorts if args.cohorts is not None else _read_cohort_ids(args.cohorts_file)
    ring = Keyring.generate(args.scheme, vocab_size=args.vocab_size, cohorts=cohorts, assign=args.assign, **params)
    ring.save(args.out, overwrite=args.force)
    print(f"wrote {args.out} (mode 0600): one master secret; cohort keys are derived from it on demand")
    print(f"ring_id    {ring.ring_id}")
    print(f"scheme     {ring.scheme} {ring.params}")
    print(f"vocab_size {ring.vocab_size}")
    print(f"cohorts    {ring.n_cohorts:,} ({ring.cohorts[0]} ... {ring.cohorts[-1]}); account ids map "
          + ("to themselves only" if ring.assign == "exact" else "to a bucket by a keyed hash"))
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from .apps.demo import run_demo
    from .report import format_pvalue

    t0 = time.perf_counter()
    rows = run_demo(args.out, corpus=args.corpus, rho=args.rho, n_queries=args.n_prompts,
                    query_tokens=args.max_tokens, decoys=args.decoys, alpha=args.alpha, seed=args.seed,
                    progress=_progress)
    print()
    print(f"fingerprint demo: a student distilled with {args.rho:.0%} fingerprinted teacher outputs vs a "
          f"control that never saw them; each queried over HTTP ({_n(args.n_prompts, 'prompt')} x "
          f"{_n(args.max_tokens, 'token')})")
    header = (f"{'suspect':<8} {'rho':>5} {'tokens':>7} {'scored':>7} {'p (text)':>10} {'p (served)':>11} "
              f"{'green-rate excess [95% CI]':>28} {'log10 BF':>9} {'posterior':>10} {'decoys':>7}  verdict")
    print(header)
    print("-" * len(header))
    for r in rows:
        t, sup = r.text_only, r.supervised
        e = t.test.effect
        post = "> 0.999999" if t.bayes.posterior > 0.999999 else f"{t.bayes.posterior:.6f}"
        dec = "pass" if t.decoys is None or t.decoys.passed else "FAIL"
        print(f"{r.suspect:<8} {r.rho:>5.1%} {r.tokens_collected:>7,} {t.counts.scored:>7,} "
              f"{format_pvalue(t.test.log10_pvalue):>10} {format_pvalue(sup.test.log10_pvalue):>11} "
              f"{f'{e.value:+.4f} [{e.ci_low:+.4f}, {e.ci_high:+.4f}]':>28} {t.bayes.log10_bayes_factor:>9.2f} "
              f"{post:>10} {dec:>7}  {t.verdict}")
    print()
    for r in rows:
        print(f"{r.suspect}: evidence {r.evidence}  report {r.report_html}")
    expected = rows[0].text_only.verdict == "detected" and rows[1].text_only.verdict == "not detected"
    print(f"\n{'as expected' if expected else 'UNEXPECTED verdicts'}: the distilled student is "
          f"{rows[0].text_only.verdict}, the control is {rows[1].text_only.verdict} "
          f"(alpha = {format_alpha(args.alpha)}; {time.perf_counter() - t0:.0f}s)")
    return EXIT_OK


def _cmd_roundtrip(args: argparse.Namespace) -> int:
    from .apps.roundtrip import run_roundtrip
    from .report import format_pvalue
    from .sim.teacher import build_teacher

    t0 = time.perf_counter()
    _progress("building the teacher (BPE tokenizer + n-gram model on packaged English text; cached)")
    teacher = build_teacher(args.corpus, vocab_size=args.bpe_vocab_size)
    _progress(f"teacher ready: vocab {teacher.vocab_size}, {teacher.tokens.size:,} corpus tokens "
              f"({time.perf_counter() - t0:.1f}s)")
    rows = run_roundtrip(teacher, n_prompts=args.n_prompts, tokens_per_response=args.max_tokens,
                         seed=args.seed, progress=_progress)
    alpha = args.alpha
    print()
    print(f"Round trip: {_n(args.n_prompts, 'prompt')} x {_n(args.max_tokens, 'token')} per scheme; "
          f"verdict at alpha = {format_alpha(alpha)}")
    header = f"{'scheme':<11} {'text':<14} {'scored':>7} {'p-value':>10} {'effect [95% CI]':>28}  verdict"
    print(header)
    print("-" * len(header))
    ok = True
    for r in rows:
        for label, kr, should in (("fingerprinted", r.fingerprinted, True), ("plain", r.plain, False)):
            res, counts = kr.test, kr.counts
            detected = res.log10_pvalue <= math.log10(alpha)
            ok &= detected == should
            eff = res.effect
            ci = f"{eff.value:+.3f} [{eff.ci_low:+.3f}, {eff.ci_high:+.3f}]"
            print(f"{r.scheme:<11} {label:<14} {counts.scored:>7} {format_pvalue(res.log10_pvalue):>10} "
                  f"{ci:>28}  {'detected' if detected else 'not detected'}")
    print(f"\n{'all as expected' if ok else 'UNEXPECTED verdict(s) above'} "
          f"({time.perf_counter() - t0:.1f}s)")
    return EXIT_OK


def _anytime_cell(r: dict) -> str:
    from .report import format_pvalue

    return "n/a" if r["anytime_log10_pvalue"] is None else format_pvalue(r["anytime_log10_pvalue"])


def _columns(args: argparse.Namespace) -> "Columns":
    from .scale.sources import Columns

    def name(value: str | None) -> str | None:
        return None if value in (None, "", "none") else value

    if args.token_column:
        return Columns(response=None, prompt=None, messages=None, id=name(args.id_column), tokens=args.token_column,
                       prompt_tokens=name(args.prompt_token_column)).validate()
    return Columns(response=args.response_column, prompt=name(args.prompt_column), messages=name(args.messages_column),
                   id=name(args.id_column)).validate()


def _served_filters(args: argparse.Namespace, keys, tokenizer, columns, progress):
    """(window filters per width or None, served ExchangeSet for the report or None,
    raw served ExchangeSet for verify_exchanges or None)."""
    from pathlib import Path

    from .corpus import ExchangeSet, InputFile
    from .scale.sources import read_corpus
    from .windows import WindowFilter

    if not args.served:
        return None, None, None
    progress(f"served outputs (the supervised setting): {', '.join(args.served)}")
    vocab = max(k.vocab_size for k in keys)
    widths = list(dict.fromkeys(k.scheme_object().context_width for k in keys))
    if len(args.served) == 1 and (Path(args.served[0]) / "manifest.json").is_file():
        from .scale.index import WindowIndex

        index = WindowIndex.open(args.served[0])
        progress(f"served-window index {args.served[0]}: {', '.join(f'h={h}: {index.n_windows(h):,}' for h in index.widths)} windows")
        filters = {h: index.window_filter(h, vocab) for h in widths}
        listed = ExchangeSet(files=[InputFile(str(index.manifest_path), sha256_of(index.manifest_path),
                                              "served-window index", sum(g.get("records", 0) for g in index.sources))])
        return filters, listed, None
    batch, _ = read_corpus(args.served, replace_prompt_free(columns), skip_invalid=args.skip_invalid,
                           require_prompt=False)
    if batch.tokens is not None:
        assert batch.offsets is not None
        filters = {h: WindowFilter.from_tokens(batch.tokens, batch.offsets, h, vocab_size=vocab) for h in widths}
        return filters, batch.exchanges, None
    if not batch.exchanges.exchanges:
        from .errors import InputError

        raise InputError("the served-outputs input holds no responses")
    if args.dask:
        tokens, offsets = tokenizer.encode_batch(batch.exchanges.responses)
        filters = {h: WindowFilter.from_tokens(tokens, offsets, h, vocab_size=vocab) for h in widths}
        return filters, batch.exchanges, None
    return None, batch.exchanges, batch.exchanges


def replace_prompt_free(columns):
    """Served outputs need no prompt column."""
    return columns if columns.tokens else replace(columns, prompt=None, messages=None)


def sha256_of(path) -> str:
    from .corpus import sha256_file

    return sha256_file(path)


#: verify --mode logprobs, verdict not detected: why a server's own fingerprint cannot show here.
LOGPROBS_NOTE = ("logprobs mode tests the distribution the suspect reports for a bias it learned from your "
                 "fingerprinted outputs (a distilled student's inherited bias). Logprobs reported by a server are "
                 "the model's distribution before any watermark is applied at sampling, so a server that "
                 "fingerprints its own answers (fingerprint serve --key, or your own serving stack) shows nothing "
                 "here: test its sampled text with --mode text.")


def _check_open_weights_flags(args: argparse.Namespace) -> None:
    """``--suspect-model``, ``--reference-model`` and ``--top-k`` belong to ``--mode reading``."""
    given = [f for f, v in (("--suspect-model", args.suspect_model), ("--reference-model", args.reference_model),
                            ("--top-k", args.top_k), ("--window-weights", args.window_weights),
                            ("--window-aggregate", args.window_aggregate)) if v is not None]
    if not given:
        return
    if args.mode != "reading":
        raise ParameterError(f"{', '.join(given)}: open-weights reading needs --mode reading (the positional inputs "
                             f"are then the fed texts), not --mode {args.mode}")
    if not args.suspect_model:
        raise ParameterError(f"{', '.join(given)} need --suspect-model DIR (the suspect's checkpoint directory)")
    if args.top_k is not None and args.top_k < 1:
        raise ParameterError(f"--top-k must be >= 1, got {args.top_k}")
    for flag, bad in (("--keyring", args.keyring), ("--dask", args.dask), ("--served", args.served)):
        if bad:
            raise ParameterError(f"--suspect-model reads the model in this process with --key: {flag} does not apply")


def _verify_open_weights(args: argparse.Namespace, keys, tokenizer, options, batch, progress):
    """``verify --mode reading --suspect-model DIR``: read the model's distributions on the fed
    texts (``batch``: the positional inputs, the owner's texts), build the evidence and test it."""
    from .interop.open_weights import OpenWeightsModel
    from .verify import key_vocab_notes, verify_evidence
    from .verify.access import access_scheme
    from .verify.distribution import (WINDOW_AGGREGATES, WINDOW_WEIGHTINGS, distribution_evidence, entropy_weights,
                                      exposure_weights, sqrt_exposure_weights)

    top_k = 64 if args.top_k is None else args.top_k
    weighting = args.window_weights or "uniform"
    aggregate = args.window_aggregate or "first"
    notes = key_vocab_notes(tokenizer, keys)
    widths = list(dict.fromkeys(access_scheme(k, tokenizer, "reading", fed_texts_clean=args.fed_texts_clean)
                                .context_width for k in keys))
    if batch.tokens is not None:
        assert batch.offsets is not None
        texts: list = [batch.tokens[batch.offsets[i]:batch.offsets[i + 1]] for i in range(batch.offsets.size - 1)]
    else:
        texts = list(batch.exchanges.responses)
    if not texts:
        from .errors import InputError

        raise InputError("no fed texts to read (all inputs empty or skipped)")
    progress(f"loading the suspect model {args.suspect_model}")
    model = OpenWeightsModel(args.suspect_model)
    references = []
    for path in args.reference_model or []:
        progress(f"loading the reference model {path}")
        references.append(OpenWeightsModel(path))
    whose = "the references' mean" if len(references) > 1 else "the reference's"
    progress(f"reading {_n(len(texts), 'fed text')} with the suspect model (top {top_k} candidates per position"
             + (f", and {whose} probabilities of them)" if references else ")"))
    reading = model.read(texts, tokenizer, top_k=top_k, reference=references or None)

    def weights(h: int):
        if weighting == "exposure":
            return exposure_weights([d.tokens for d in reading.distributions], h)
        if weighting == "sqrt-exposure":
            return sqrt_exposure_weights([d.tokens for d in reading.distributions], h)
        if weighting == "entropy":
            return entropy_weights(reading.distributions)
        return None

    evidence = [distribution_evidence(reading.distributions, context_width=h, vocab_size=tokenizer.vocab_size,
                                      exclude_fed_pairs=not args.fed_texts_clean, text_ids=batch.text_ids,
                                      window_weights=weights(h), aggregate=aggregate)
                for h in widths]
    notes.append(f"open weights: the inputs are the fed texts (the owner's texts the suspect model read), not the "
                 f"suspect's answers; suspect model {model.describe()}; its top {top_k} next-token candidates at "
                 f"every position, each window's weights scaled to unit norm")
    notes.append(f"window weights: {weighting} ({WINDOW_WEIGHTINGS[weighting]}; fixed before any key is used, so "
                 f"the null holds as for uniform weights)")
    notes.append(f"windows read: {aggregate} ({WINDOW_AGGREGATES[aggregate]})")
    if len(references) == 1:
        notes.append(f"reference model (the owner's own, never trained on the key): {references[0].describe()}; each "
                     f"candidate weighs max(p_suspect - p_reference, 0)")
    elif references:
        notes.append(f"{len(references)} reference models (the owner's own, never trained on the key): "
                     + "; ".join(r.describe() for r in references) + "; each candidate weighs max(p_suspect - "
                     "p_reference, 0) with p_reference the references' mean (their own noise averages out)")
    else:
        notes.append("no reference model: each candidate weighs p_suspect (a reference model, the owner's own, "
                     "removes what every model reading the same texts shares, and gains power)")
    notes.extend(reading.notes())
    if not args.fed_texts_clean:
        notes.append("pairs occurring in the fed texts are not scored (the fed texts may carry the fingerprint; "
                     "--fed-texts-clean when they were sampled without it)")
    return verify_evidence(evidence, keys, options=options, notes=notes, tokenizer_vocab_size=tokenizer.vocab_size,
                           progress=progress)


def _cmd_verify(args: argparse.Namespace) -> int:
    from .corpus import sha256_file
    from .report import (build_report, check_output_path, format_pvalue, render_html, render_markdown, write_json,
                         write_responses, write_text)
    from .scale.cluster import connect, describe
    from .scale.sources import read_corpus
    from .tokenize import load_tokenizer
    from .verify import VERDICT_DETECTED, VerifyOptions, verify, verify_exchanges

    progress = (lambda _m: None) if args.quiet else _progress
    t0 = time.perf_counter()
    for flag, out in (("--json", args.json), ("--markdown", args.markdown), ("--html", args.html),
                      ("--responses-out", args.responses_out)):
        if out:
            check_output_path(out, flag)
    _check_open_weights_flags(args)
    custody = _check_custody(args)
    if args.keyring:
        if args.key:
            raise FingerprintError("give --key or --keyring, not both")
        return _verify_keyring(args, custody, progress, t0)
    if not args.key:
        raise FingerprintError("verify needs --key KEY (or --keyring RING)")
    if args.correction != "holm":
        raise FingerprintError("--correction applies to --keyring (several --key files are always Holm-corrected)")
    keys = [FingerprintKey.load(k, allow_insecure=args.allow_insecure_key) for k in args.key]
    tokenizer = load_tokenizer(args.tokenizer, tiktoken_pattern=args.tiktoken_pattern)
    columns = _columns(args)
    filters, served_listed, served_raw = _served_filters(args, keys, tokenizer, columns, progress)
    options = VerifyOptions(mode=args.mode, alpha=args.alpha, n_decoys=args.decoys, decoy_seed=args.decoy_seed,
                            prior_probability=args.prior, effect_prior_max=args.effect_prior_max,
                            fed_texts_clean=args.fed_texts_clean, optional_stopping=args.optional_stopping)
    if args.worker_memory and not args.dask:
        raise ParameterError("--worker-memory needs --dask local[:N]")
    if args.dask:
        from .scale.engine import verify_partitions

        with connect(args.dask, memory_limit=args.worker_memory) as engine:
            if engine.dashboard:
                progress(f"dask: {engine.workers} worker(s), dashboard {engine.dashboard}")
            scaled = verify_partitions(args.suspect, keys, tokenizer, options=options, columns=columns,
                                       window_filters=filters, engine=engine, skip_invalid=args.skip_invalid,
                                       progress=progress)
            engine_info = describe(engine, scaled.partitions)
        result, suspect = scaled.result, scaled.suspect
    elif args.suspect_model:
        progress(f"reading {_n(len(args.suspect), 'fed-text input')}: {', '.join(args.suspect)}")
        batch, parts = read_corpus(args.suspect, replace_prompt_free(columns), skip_invalid=args.skip_invalid,
                                   require_prompt=False)
        suspect = batch.exchanges
        result = _verify_open_weights(args, keys, tokenizer, options, batch, progress)
        engine_info = describe(None, len(parts))
    else:
        progress(f"reading {_n(len(args.suspect), 'suspect input')}: {', '.join(args.suspect)}")
        batch, parts = read_corpus(args.suspect, columns, skip_invalid=args.skip_invalid)
        suspect = batch.exchanges
        if suspect.stopping_rules and not options.optional_stopping:
            progress(f"evidence gathered with a stopping rule ({suspect.stopping_rules[0]['file']}): the anytime-valid "
                     f"p-value decides")
            options = replace(options, optional_stopping=True)
        if batch.tokens is not None:
            from .verify import key_vocab_notes

            if options.mode != "text":
                raise ParameterError(f"token-id inputs support --mode text only, not {options.mode!r}")
            notes = key_vocab_notes(tokenizer, keys)
            result = verify(batch.tokens, batch.offsets, keys=keys, prompt_tokens=batch.prompt_tokens,
                            prompt_offsets=batch.prompt_offsets, text_ids=batch.ids, options=options,
                            window_filters=filters, progress=progress)
            result.notes[:0] = notes
            result.tokenizer_vocab_size = tokenizer.vocab_size
        else:
            result = verify_exchanges(suspect, tokenizer, keys, options=options, served=served_raw,
                                      window_filters=filters, progress=progress)
        engine_info = describe(None, len(parts))
    doc = build_report(result, suspect=suspect, served=served_listed, tokenizer_path=str(args.tokenizer),
                       tokenizer_sha256=sha256_file(args.tokenizer))
    doc["engine"] = engine_info
    doc["custody"] = custody.to_dict()
    doc["notes"][:0] = custody.notes()
    if args.mode == "logprobs" and doc["verdict"] != VERDICT_DETECTED:
        doc["notes"].append(LOGPROBS_NOTE)
    if args.responses_out:
        write_responses(result, args.responses_out)
    if args.json:
        write_json(doc, args.json)
    if args.markdown:
        write_text(render_markdown(doc), args.markdown)
    if args.html:
        write_text(render_html(doc), args.html)

    print(f"\nfingerprint verify: {_n(doc['n_texts'], 'response')}, {_n(doc['n_tokens'], 'token')} read, "
          f"{doc['skipped']['count']:,} skipped, alpha = {format_alpha(args.alpha)}"
          + (" (Holm over keys)" if doc["holm_applied"] else ""))
    header = (f"{'key':<14} {'scheme':<10} {'scored':>9} {'p-value':>12} {'anytime p':>11} {'effect [95% CI]':>30} "
              f"{'decoys':>16} {'log10 BF':>9} {'posterior':>10}  verdict")
    print(header)
    print("-" * len(header))
    for r in doc["results"]:
        eff = r["effect"]
        ci = "n/a" if eff["value"] is None else f"{eff['value']:+.4f} [{eff['ci_low']:+.4f}, {eff['ci_high']:+.4f}]"
        d = r["decoys"]
        dec = "none" if d is None else f"{'pass' if d['passed'] else 'FAIL'} KS p {format_plain_p(d['ks_pvalue'])}"
        post = "> 0.999999" if r["posterior"] > 0.999999 else f"{r['posterior']:.6f}"
        print(f"{r['key_id'][:14]:<14} {r['scheme']:<10} {r['n_scored']:>9,} "
              f"{format_pvalue(r['holm_log10_pvalue']):>12} {_anytime_cell(r):>11} {ci:>30} {dec:>16} "
              f"{r['log10_bayes_factor']:>9.2f} {post:>10}  {r['verdict']}")
    _print_custody_notes_outputs(args, custody, doc)
    valid = {r["valid_pvalue"] for r in doc["results"]}
    print("p-value: " + ("the anytime-valid p-value decides (evidence gathered with a stopping rule)"
                         if valid == {"anytime"} else "fixed-n (valid when the amount of evidence was fixed in "
                                                      "advance; the anytime-valid one holds under any stopping)"))
    print(f"verdict: {doc['verdict']} ({time.perf_counter() - t0:.1f}s)")
    if args.fail_on_detect and doc["verdict"] == VERDICT_DETECTED:
        return EXIT_DETECTED
    return EXIT_OK


def _print_custody_notes_outputs(args: argparse.Namespace, custody, doc: dict) -> None:
    """The lines every verify run ends with: custody of each input, the report's notes, the
    reports written."""
    for c in custody.evidence:
        print(f"custody: {c.describe()}")
    for note in doc["notes"]:
        print(f"note: {note}")
    for label, path in (("json", args.json), ("markdown", args.markdown), ("html", args.html)):
        if path:
            print(f"{label} report: {path}")


def _verify_keyring(args: argparse.Namespace, custody, progress, t0: float) -> int:
    """``verify --keyring``: the global test, the ranked cohorts, the reports."""
    from .corpus import sha256_file
    from .keyring import Keyring
    from .report import write_json, write_text
    from .report.keyring import (build_keyring_report, keyring_table_lines, render_keyring_html,
                                 render_keyring_markdown)
    from .scale.sources import read_corpus
    from .tokenize import load_tokenizer
    from .verify import VERDICT_DETECTED, VerifyOptions
    from .verify.keyring import verify_keyring_exchanges, verify_keyring_tokens

    if args.mode != "text":
        raise ParameterError(f"--keyring verifies sampled text (--mode text), not --mode {args.mode}")
    if args.dask:
        raise ParameterError("--keyring runs in this process; --dask applies to --key")
    if args.optional_stopping:
        raise ParameterError("--keyring gives fixed-n p-values: --optional-stopping applies to --key")
    ring = Keyring.load(args.keyring, allow_insecure=args.allow_insecure_key)
    progress(f"keyring {ring.ring_id[:12]}: {ring.n_cohorts:,} cohorts, {ring.scheme}")
    tokenizer = load_tokenizer(args.tokenizer, tiktoken_pattern=args.tiktoken_pattern)
    columns = _columns(args)
    probe = ring.cohort_key(ring.cohorts[0])
    filters, served_listed, served_raw = _served_filters(args, [probe], tokenizer, columns, progress)
    options = VerifyOptions(mode="text", alpha=args.alpha, n_decoys=args.decoys, decoy_seed=args.decoy_seed,
                            prior_probability=args.prior, effect_prior_max=args.effect_prior_max)
    progress(f"reading {_n(len(args.suspect), 'suspect input')}: {', '.join(args.suspect)}")
    batch, _parts = read_corpus(args.suspect, columns, skip_invalid=args.skip_invalid)
    suspect = batch.exchanges
    if suspect.stopping_rules:
        raise ParameterError(f"{suspect.stopping_rules[0]['file']}: evidence gathered with a stopping rule needs the "
                             f"anytime-valid test of --key; --keyring gives fixed-n p-values")
    if batch.tokens is not None:
        result = verify_keyring_tokens(batch.tokens, batch.offsets, ring=ring, prompt_tokens=batch.prompt_tokens,
                                       prompt_offsets=batch.prompt_offsets, window_filters=filters, options=options,
                                       correction=args.correction, progress=progress)
    else:
        result = verify_keyring_exchanges(suspect, tokenizer, ring, options=options, served=served_raw,
                                          window_filters=filters, correction=args.correction, progress=progress)
    doc = build_keyring_report(result, suspect=suspect, served=served_listed, tokenizer_path=str(args.tokenizer),
                               tokenizer_sha256=sha256_file(args.tokenizer), tokenizer_vocab_size=tokenizer.vocab_size)
    doc["custody"] = custody.to_dict()
    doc["notes"][:0] = custody.notes()
    if args.responses_out:
        raise ParameterError("--responses-out applies to --key")
    if args.json:
        write_json(doc, args.json)
    if args.markdown:
        write_text(render_keyring_markdown(doc), args.markdown)
    if args.html:
        write_text(render_keyring_html(doc), args.html)
    print(f"\nfingerprint verify --keyring: {_n(doc['n_texts'], 'response')}, {_n(doc['n_tokens'], 'token')} read, "
          f"{doc['n_scored']:,} distinct tuples scored by {ring.n_cohorts:,} cohort keys, alpha = {format_alpha(args.alpha)}")
    print(f"global test (some cohort's outputs were learned): p = {doc['global']['pvalue_display']}")
    for line in keyring_table_lines(doc):
        print(line)
    d = doc["decoys"]
    if d is not None:
        print(f"decoy cohorts: {d['k']} never served, KS p {format_plain_p(d['ks_pvalue'])}: "
              f"{'pass' if d['passed'] else 'FAIL'}")
    _print_custody_notes_outputs(args, custody, doc)
    print(f"cohorts identified ({args.correction}): {', '.join(doc['flagged']) or 'none'}")
    print(f"verdict: {doc['verdict']}: {doc['reason']} ({time.perf_counter() - t0:.1f}s)")
    if args.fail_on_detect and doc["verdict"] == VERDICT_DETECTED:
        return EXIT_DETECTED
    return EXIT_OK


def _cmd_collect(args: argparse.Namespace) -> int:
    from .collect.client import ClientLimits, CollectSettings, run_collect

    headers = {}
    for i, h in enumerate(args.header or [], start=1):
        if ":" not in h:  # the text is not shown: it may be a secret
            raise ParameterError(f"--header number {i}: expected 'Name: value' (no ':' found; the value is "
                                 f"not shown)")
        name, value = h.split(":", 1)
        headers[name.strip()] = value.strip()
    settings = CollectSettings(
        base_url=args.base_url, model=args.model, endpoint=args.endpoint,
        sampling={"temperature": args.temperature, "top_p": args.top_p, "max_tokens": args.max_tokens,
                  "seed": args.seed, "n": args.n, "stop": args.stop},
        logprobs=args.logprobs, echo=args.echo, samples=args.samples, headers=headers,
        api_key_env=args.api_key_env, secret_headers=tuple(args.secret_header or ()))
    caps = {name: value for name, value in (("request_deadline", args.request_deadline),
                                            ("retry_after_max", args.retry_after_max),
                                            ("max_body_bytes", args.max_body)) if value is not None}
    limits = ClientLimits(concurrency=args.concurrency, rate=args.rate, connect_timeout=args.connect_timeout,
                          read_timeout=args.read_timeout, max_attempts=args.max_attempts, **caps)
    settings.validate()  # bad settings exit 2 before any key, tokenizer or request is touched
    limits.validate()
    monitor = None
    if args.until_detected:
        from .apps.until_detected import AnytimeDetectionMonitor
        from .tokenize import load_tokenizer

        if not args.key or not args.tokenizer:
            raise FingerprintError("--until-detected needs --key and --tokenizer (the owner's)")
        monitor = AnytimeDetectionMonitor(FingerprintKey.load(args.key, allow_insecure=args.allow_insecure_key),
                                          load_tokenizer(args.tokenizer, tiktoken_pattern=args.tiktoken_pattern),
                                          alpha=args.alpha, check_every=args.check_every,
                                          max_requests=args.max_requests)
    elif args.key or args.tokenizer:
        raise FingerprintError("--key and --tokenizer apply to collect only with --until-detected")
    signer = None
    if args.signing_key:
        from .collect.custody import EvidenceSigner

        if args.checkpoint_every < 1:
            raise FingerprintError(f"--checkpoint-every must be at least 1, got {args.checkpoint_every}")
        signer = EvidenceSigner.from_file(args.signing_key, every=args.checkpoint_every,
                                          allow_insecure=args.allow_insecure_key)
    try:
        stats = run_collect(args.prompts, settings, args.out, limits=limits, quiet=args.quiet, monitor=monitor,
                            max_requests=args.max_requests, signer=signer)
    except KeyboardInterrupt:
        print(f"\nfingerprint: interrupted; every finished exchange is in {args.out}. "
              f"Rerun the same command to resume.", file=sys.stderr)
        return 130
    print(f"collected {stats.collected:,}, failed {stats.failed:,}, already in the evidence "
          f"{stats.already_done:,} of {stats.planned:,} planned; {_n(stats.retries, 'retry', 'retries')}; "
          f"{stats.rate:.1f} req/s over {stats.elapsed:.1f}s")
    print(f"evidence: {args.out} (last sha256 {stats.last_sha256})")
    if stats.invalid_existing:
        print(f"note: {_n(stats.invalid_existing, 'earlier record')} hold a 200 response that is not a valid answer; "
              f"their pairs were asked again (verify names those records, or skips them with --skip-invalid)")
    if stats.redacted_records:
        print(f"note: a secret (the API key or a secret header) was scrubbed from "
              f"{_n(stats.redacted_records, 'record')} (field \"redacted\")")
    if stats.internal_errors:
        print(f"warning: {_n(stats.internal_errors, 'exchange')} met an internal error of the collector and were "
              f"recorded as failures (see their \"error\"); please report it", file=sys.stderr)
    if monitor is not None:
        from .report import format_pvalue

        used = stats.already_done + stats.collected
        print(f"until detected: {'STOPPED: detected' if stats.stopped_early else 'budget used, not detected'}; "
              f"anytime-valid p = {format_pvalue(monitor.last_log10_pvalue)} (alpha = {format_alpha(args.alpha)}) after "
              f"{used:,} of {_n(stats.planned, 'request')}")
    return EXIT_OK


def _check_custody(args: argparse.Namespace):
    """verify's first step: the chain (and signatures) of every evidence input; raises
    InputError (exit 2) naming the file and line unless --accept-broken-chain."""
    from pathlib import Path

    from .collect.custody import check_inputs, load_public_key
    from .scale.sources import expand_inputs

    served = args.served or []
    if len(served) == 1 and (Path(served[0]) / "manifest.json").is_file():
        served = []  # a served-window index, not evidence
    suspect_paths = expand_inputs(args.suspect)
    served_paths = expand_inputs(served) if served else []
    both = sorted({str(Path(p).resolve()) for p in suspect_paths} & {str(Path(p).resolve()) for p in served_paths})
    if both:
        raise ParameterError(f"{both[0]} is given both as a suspect input and with --served: --served takes one "
                             f"path per flag (repeat it: --served a.jsonl --served b.jsonl); the suspect's inputs "
                             f"are the positional arguments")
    # the investigator signs what was gathered from the suspect; served outputs are the owner's logs
    return check_inputs(suspect_paths, public_keys=[load_public_key(p) for p in args.public_key or []],
                        accept_broken=args.accept_broken_chain, owner_paths=served_paths)


def _cmd_evidence_verify(args: argparse.Namespace) -> int:
    from .collect.custody import check_custody, load_public_key

    keys = [load_public_key(p) for p in args.public_key or []]
    c = check_custody(args.file, public_keys=keys, require_signature=bool(keys))
    if not c.ok:
        for line, what in c.problems:
            print(f"{args.file}{f' line {line}' if line else ''}: BROKEN: {what}")
        return EXIT_DETECTED
    print(f"{args.file}: chain intact, {_n(c.chain.records, 'record')}, last sha256 {c.chain.last_sha256}")
    m = c.manifest
    if m is None:
        print(f"unsigned: no manifest ({args.file}.manifest.json); the chain shows edits only by someone who did not "
              f"recompute the later hashes")
    else:
        print(f"signed: {_n(m.checkpoints, 'checkpoint')}, the final one at {m.last_signed_at} over all "
              f"{_n(m.signed_records or 0, 'record')}; manifest {m.path} sha256 {m.sha256}")
        print(f"key sha256 {m.public_key_sha256}: "
              + ("the investigator's public key given" if m.trusted else
                 "the manifest's own key, NOT checked: pass --public-key with the investigator's public key"))
    return EXIT_OK


def _cmd_evidence_keygen(args: argparse.Namespace) -> int:
    from .collect.custody import generate_signing_key

    priv, pub, fp = generate_signing_key(args.out, overwrite=args.force)
    print(f"wrote {priv} (Ed25519 private key, mode 0600: keep it secret; collect --signing-key signs with it)")
    print(f"wrote {pub} (public key: whoever checks the evidence uses it with --public-key)")
    print(f"public key sha256 {fp}")
    return EXIT_OK


def _cmd_evidence_sign(args: argparse.Namespace) -> int:
    from .collect.custody import EvidenceSigner, sign_evidence

    signer = EvidenceSigner.from_file(args.signing_key, allow_insecure=args.allow_insecure_key)
    cp = sign_evidence(args.file, signer)
    print(f"{args.file}: signed {_n(cp.records, 'record')}, head sha256 {cp.head_sha256} at {cp.signed_at} "
          f"(key sha256 {signer.public_key_sha256}); manifest {signer.manifest}")
    return EXIT_OK


def _settings_text(value: object) -> str:
    """A settings value for a reader: ``a 1, b 2`` for a dict (unset entries left out), ``none`` for None."""
    if value is None or value == {} or value == []:
        return "none"
    if isinstance(value, dict):
        items = [f"{k} {_settings_text(v)}" for k, v in value.items() if v is not None and v != []]
        return ", ".join(items) if items else "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(_settings_text(v) for v in value)
    return str(value)


def _cmd_evidence_summary(args: argparse.Namespace) -> int:
    import json

    from .collect.summary import summarize_evidence

    s = summarize_evidence(args.file)
    code = EXIT_OK if s.ok else EXIT_DETECTED
    if args.json:
        print(json.dumps({"file": str(args.file), **s.to_dict()}, indent=2, sort_keys=False))
        return code
    st = s.settings or {}
    c = s.chain
    m = s.manifest
    rows = [
        ("file", str(args.file)),
        ("chain", f"intact, {_n(c.records, 'record')}" if c.ok else
         f"BROKEN at line {c.first_bad_line}: {c.problem} ({_n(c.records, 'record')} intact before it)"),
        ("last sha256", c.last_sha256),
        ("endpoint", f"{st.get('url', 'unknown')} ({st.get('endpoint', 'unknown')})" if st else "unknown (no header)"),
        ("model", str(st.get("model", "unknown"))),
        ("sampling", _settings_text(st.get("sampling"))),
        ("logprobs", "not asked" if st.get("logprobs") is None else f"top {st['logprobs']}"
         + (", with echo" if st.get("echo") else "")),
        ("samples", f"{st.get('samples', 1)} per prompt"),
        ("exchanges", f"{_n(s.records, 'record')}: {s.succeeded:,} succeeded, {s.failed:,} failed"),
        ("prompts", f"{s.distinct_prompts:,} distinct; "
                    f"{_n(s.duplicate_successes, 'duplicate success', 'duplicate successes')}"),
        ("statuses", ", ".join(f"{k}: {v:,}" for k, v in sorted(s.statuses.items())) or "none"),
        ("time span", f"{s.first_started_at} .. {s.last_finished_at}" if s.records else "no exchanges"),
        ("manifest", "none (unsigned)" if m is None else
         f"{m.path}: {'valid' if m.ok else 'INVALID: ' + str(m.problem)}; {_n(m.checkpoints, 'checkpoint')}, "
         f"last at {m.last_signed_at} over {_n(m.signed_records or 0, 'record')}{' (final)' if m.final else ''}, "
         f"key sha256 {m.public_key_sha256}"),
    ]
    width = max(len(label) for label, _ in rows) + 2
    for label, value in rows:
        print(f"{label:<{width}}{value}")
    return code


def _cmd_serve(args: argparse.Namespace) -> int:
    from .sim.server import Faults, ServedModel, serve
    from .sim.teacher import build_teacher

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        raise FingerprintError(f"--host {args.host}: the simulation server only listens on loopback")
    if (args.model_file is None) != (args.tokenizer is None):
        raise ParameterError("--model-file and --tokenizer go together: a saved n-gram model and the tokenizer.json "
                             "of its ids")
    if args.model_file is not None and args.corpus:
        raise ParameterError("--corpus trains the demo teacher; it does not apply with --model-file")
    if args.default_cohort is not None and not args.keyring:
        raise ParameterError(f"--default-cohort {args.default_cohort}: needs --keyring (a single --key serves every "
                             f"request alike)")
    ring = None
    if args.keyring:
        from .keyring import Keyring

        ring = Keyring.load(args.keyring, allow_insecure=args.allow_insecure_key)
        if args.default_cohort is not None and args.default_cohort not in ring.cohorts:
            raise ParameterError(f"--default-cohort {args.default_cohort!r} is not a cohort of --keyring "
                                 f"{args.keyring} ({ring.n_cohorts} cohorts, e.g. {ring.cohorts[0]!r})")
    if args.key:
        from .keyring import is_keyring_file

        if is_keyring_file(args.key):
            raise ParameterError(f"--key {args.key} is a keyring file (a key per cohort): serve it with --keyring")
    scheme = FingerprintKey.load(args.key, allow_insecure=args.allow_insecure_key).scheme_object() if args.key else None
    t0 = time.perf_counter()
    if args.model_file is not None:
        from .sim.ngram import NgramLM
        from .tokenize import load_tokenizer

        _progress(f"loading {args.model_file} and {args.tokenizer}...")
        try:
            model = NgramLM.load(args.model_file)
        except (OSError, KeyError, ValueError) as exc:
            raise ParameterError(f"--model-file {args.model_file}: not an n-gram model saved by fingerprint "
                                 f"({type(exc).__name__}: {exc})") from None
        tokenizer = load_tokenizer(args.tokenizer)
        if model.vocab_size != tokenizer.vocab_size:
            raise ParameterError(f"--model-file {args.model_file} has vocab {model.vocab_size:,} but --tokenizer "
                                 f"{args.tokenizer} has {tokenizer.vocab_size:,}: not the model's tokenizer")
    else:
        _progress("building the demo teacher (BPE tokenizer + n-gram model; cached after the first run)...")
        teacher = build_teacher(args.corpus, vocab_size=args.bpe_vocab_size)
        model, tokenizer = teacher.model, teacher.tokenizer
    _progress(f"model ready: vocab {tokenizer.vocab_size:,} ({time.perf_counter() - t0:.1f}s)")
    if ring is not None and model.vocab_size != ring.vocab_size:
        raise ParameterError(f"--keyring {args.keyring} has vocab_size {ring.vocab_size:,} but the model's logits have "
                             f"width {model.vocab_size:,}: make the keyring with --vocab-size {model.vocab_size}")
    served = ServedModel(model, tokenizer, name=args.model_name, scheme=scheme, keyring=ring,
                         default_cohort=args.default_cohort)
    faults = Faults.mixed(args.faults, slow_seconds=args.slow_seconds) if args.faults else Faults()
    srv = serve(served, host=args.host, port=args.port, faults=faults, instant=args.instant)
    if args.key or ring is not None:
        _progress("the logprobs this server reports are the model's distribution before the fingerprint is "
                  "applied: verify its answers with --mode text (--mode logprobs detects a student's learned bias)")
    if ring is not None:
        marked = (f"a key per cohort from {args.keyring} ({ring.n_cohorts} cohorts, assign {ring.assign}; cohort "
                  f"from X-Fingerprint-Cohort or `user`, "
                  + (f"default {args.default_cohort}" if args.default_cohort is not None else "else HTTP 400") + ")")
    else:
        marked = 'fingerprinted with ' + args.key if args.key else 'no fingerprint'
    print(f"serving {args.model_name} on {srv.url} ({marked}"
          f"{', instant answers' if args.instant else ''}); Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.close()
    return EXIT_OK


def _cmd_strength(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from .corpus import read_exchanges
    from .report import format_pvalue, render_strength_junit, render_strength_markdown, write_json, write_text
    from .strength import Thresholds, Tolerances, evaluate, load_config, measure_strength
    from .tokenize import load_tokenizer

    progress = (lambda _m: None) if args.quiet else _progress
    key = FingerprintKey.load(args.key, allow_insecure=args.allow_insecure_key)
    tokenizer = load_tokenizer(args.tokenizer, tiktoken_pattern=args.tiktoken_pattern)
    responses = read_exchanges(args.responses, skip_invalid=args.skip_invalid, require_prompt=False)
    thresholds, tolerances = load_config(args.config) if args.config else (Thresholds(), Tolerances())
    overrides = {name: getattr(args, name) for name in Thresholds.__dataclass_fields__
                 if getattr(args, name, None) is not None}
    thresholds = dataclasses.replace(thresholds, **overrides)
    baseline = None
    if args.baseline:
        try:
            baseline = json.loads(open(args.baseline, encoding="utf-8").read())
        except OSError as exc:
            raise FingerprintError(f"{args.baseline}: cannot read baseline: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise FingerprintError(f"{args.baseline}: not valid JSON (line {exc.lineno})") from None
    proxy = None
    if not args.no_radioactivity:
        from .apps.radioactivity import TrigramProxy

        proxy = TrigramProxy(seed=args.seed, budget=args.radioactivity_tokens)
    metrics = measure_strength(responses, tokenizer, key, radioactivity=proxy, seed=args.seed, progress=progress)
    result = evaluate(metrics, thresholds, baseline=baseline, tolerances=tolerances)
    if args.json:
        write_json(result.to_dict(), args.json)
    if args.markdown:
        write_text(render_strength_markdown(result), args.markdown)
    if args.junit:
        write_text(render_strength_junit(result), args.junit)
    m = result.metrics
    print(f"\nfingerprint strength: {_n(m.n_responses, 'response')}, {_n(m.n_tokens, 'token')} ({m.scheme}, "
          f"key {m.key_id[:12]}, seed {m.seed})")
    for name in ("effect", "effect_ci_low", "log10_pvalue", "tokens_to_detect_p10", "tokens_to_detect_median",
                 "tokens_to_detect_p90", "detectable_share", "unmarked_share", "radioactivity_log10_pvalue"):
        value = getattr(m, name)
        if name.endswith("log10_pvalue"):  # shown as a p-value, through the one formatter
            label, shown = name.replace("log10_pvalue", "pvalue"), "n/a" if value is None else format_pvalue(value)
        else:
            label, shown = name, "n/a" if value is None else f"{value:.4g}"
        print(f"  {label:<28} {shown}")
    for c in result.checks:
        print(f"  [{'pass' if c.passed else 'FAIL'}] {c.message}")
    print(f"{'PASS' if result.passed else 'REGRESSION'}")
    return EXIT_OK if result.passed else EXIT_DETECTED


def _shows_default(action: argparse.Action) -> bool:
    """Whether an option's help must state its default: it has a value a user would not guess
    (not None, not False, not a suppressed one) and is not a positional argument."""
    return bool(action.option_strings) and action.default not in (None, False, argparse.SUPPRESS)


class _DefaultsFormatter(argparse.HelpFormatter):
    """Every option shows its default: a help text that does not state it gets ``(default: X)``."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if _shows_default(action) and "default" not in text:
            text += " (default: %(default)s)"
        return text


class _RawDefaultsFormatter(_DefaultsFormatter, argparse.RawDescriptionHelpFormatter):
    """:class:`_DefaultsFormatter` keeping the description's and epilog's line breaks."""


def _use_formatters(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` and every subcommand below it the defaults-showing formatter (raw-description
    parsers keep their line breaks)."""
    cls = parser.formatter_class
    raw = isinstance(cls, type) and issubclass(cls, argparse.RawDescriptionHelpFormatter)
    parser.formatter_class = _RawDefaultsFormatter if raw else _DefaultsFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                _use_formatters(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fingerprint",
        description="Prove or rule out that a suspect model was trained on your model's outputs: "
                    "embed a keyed statistical fingerprint when sampling, then test suspect text "
                    "for it with exact, de-duplicated statistics.",
        epilog="exit codes (every command): 0 done, 1 the finding (detected with --fail-on-detect, a broken "
               "evidence chain, a strength regression), 2 bad input or usage, 3 internal error.")
    parser.add_argument("--version", action="version", version=f"fingerprint {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="on an internal error (exit 3), print the Python traceback")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    kg = sub.add_parser("keygen", help="create a secret fingerprint key (JSON, mode 0600)",
                        description="Create a secret fingerprint key from the OS CSPRNG. Scheme options "
                                    "not given take the scheme's defaults.")
    kg.add_argument("--scheme", required=True, choices=sorted(SCHEMES),
                    help="greenlist (Kirchenbauer et al.), gumbel (Aaronson), tournament (SynthID-Text), "
                         "hf-kgw (transformers' WatermarkingConfig), hf-synthid (transformers' "
                         "SynthIDTextWatermarkingConfig): the hf-* schemes verify text transformers watermarked")
    kg.add_argument("--vocab-size", type=int, required=True,
                    help="V: the width of the model's logits, token ids in [0, V) (the model's, which may "
                         "exceed the tokenizer's vocabulary when padded)")
    kg.add_argument("--out", required=True, help="key file to write (refuses to overwrite without --force)")
    kg.add_argument("--force", action="store_true",
                    help="overwrite an existing key file (atomically; a symlink at --out is refused, never followed)")
    kg.add_argument("--context-width", "-H", type=int, help="h: context tokens per window (default 2)")
    kg.add_argument("--gamma", type=float, help="greenlist: green fraction (default 0.25)")
    kg.add_argument("--delta", type=float, help="greenlist: logit bias of green tokens (default 3.0)")
    kg.add_argument("--layers", type=int, help="tournament: number of g-layers m (default 30)")
    kg.add_argument("--hashing-key", type=int,
                    help="hf-kgw: transformers' WatermarkingConfig hashing_key (kept secret in the key file; "
                         "default: a fresh random secret)")
    kg.add_argument("--vllm-key", help="vllm-gumbel: vLLM's WatermarkConfig key, decimal or 0x-hex (kept secret; "
                                       "default: a fresh random secret)")
    kg.add_argument("--seeding", choices=["lefthash", "selfhash"], help="hf-kgw: seeding scheme (default lefthash)")
    kg.add_argument("--greenlist-ratio", type=float, help="hf-kgw: green fraction (default 0.25)")
    kg.add_argument("--bias", type=float, help="hf-kgw: logit bias (default 2.0)")
    kg.add_argument("--synthid-keys", metavar="K1,K2,...",
                    help="hf-synthid: transformers' SynthIDTextWatermarkingConfig keys (kept secret in the key "
                         "file; default: 30 random keys)")
    kg.add_argument("--depth", type=int, help="hf-synthid: number of random keys when --synthid-keys is not given "
                                                "(default 30)")
    kg.add_argument("--ngram-len", type=int, help="hf-synthid: ngram_len (default 5)")
    kg.add_argument("--sampling-table-size", type=int, help="hf-synthid: sampling_table_size (default 65536)")
    kg.add_argument("--sampling-table-seed", type=int, help="hf-synthid: sampling_table_seed (default 0)")
    kg.add_argument("--context-history-size", type=int, help="hf-synthid: context_history_size (default 1024)")
    kg.add_argument("--param", action="append", metavar="NAME=VALUE",
                    help="any scheme parameter by name (repeatable), e.g. for a scheme added with register_scheme "
                         "(default: the scheme's defaults)")
    ring = kg.add_argument_group("keyrings: one key per cohort of accounts (verify --keyring tells which cohorts' "
                                 "outputs a suspect learned from)")
    ring.add_argument("--keyring", action="store_true",
                      help="write a keyring instead of a single key: one master secret from which every cohort's "
                           "key is derived (HKDF-SHA256 of the master and the cohort id)")
    ring.add_argument("--cohorts", type=int, metavar="N",
                      help="with --keyring: N hashed buckets bucket-0000 ...; any account id (the OpenAI `user` "
                           "field) is served by the bucket a keyed hash of it picks")
    ring.add_argument("--cohorts-file", metavar="FILE",
                      help="with --keyring: cohort ids, one per line (account ids, resellers, regions, ...); an "
                           "account must be one of them")
    ring.add_argument("--assign", choices=["exact", "hash"],
                      help="with --keyring: how an account id picks its cohort: exact (it must be a cohort id) or "
                           "hash (other ids go to a bucket by keyed hash) (default: hash with --cohorts, exact with "
                           "--cohorts-file)")
    kg.set_defaults(func=_cmd_keygen)

    ver = sub.add_parser(
        "verify", help="test a suspect's text for your fingerprint and write a report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Re-tokenize the suspect's responses with your tokenizer, score every distinct "
                    "(window, token) tuple against the key (prompt windows excluded), run one exact "
                    "test over the whole corpus, and check decoy keys as a null control.",
        epilog="inputs: JSONL exchanges {\"id\", \"prompt\", \"response\"} (prompt: string or "
               "messages list),\nevidence files from `fingerprint collect`, or plain text files.\n"
               "exit codes: 0 run completed (any verdict), 1 detected with --fail-on-detect, 2 bad input,\n"
               "3 internal error (fingerprint --debug verify ... shows the traceback).")
    ver.add_argument("suspect", nargs="+", help="suspect exchanges (JSONL), evidence files, text files, Parquet "
                                                "files, directories or globs of them")
    ver.add_argument("--key", action="append", metavar="KEY",
                     help="key file (from fingerprint keygen); repeat the flag for several keys (Holm-corrected); "
                          "this or --keyring is required")
    ver.add_argument("--keyring", metavar="RING",
                     help="a keyring (from fingerprint keygen --keyring) instead of --key: a global test that some "
                          "cohort's outputs were learned, then which cohorts (text mode)")
    ver.add_argument("--correction", choices=["holm", "bh"], default="holm",
                     help="with --keyring: how cohorts are identified: holm (family-wise error at --alpha) or bh "
                          "(Benjamini-Hochberg, false discovery rate at --alpha) (default holm)")
    ver.add_argument("--tokenizer", required=True,
                     help="the owner's tokenizer.json, or a tiktoken rank file (needs fingerprint[tiktoken])")
    ver.add_argument("--tiktoken-pattern", help="pre-tokenization regex for a tiktoken rank file "
                                                "(default: Qwen's)")
    ver.add_argument("--mode", choices=["text", "logprobs", "reading"], default="text",
                     help="text: sampled tokens (default); logprobs: the suspect's top-k logprobs (evidence "
                          "from collect --logprobs K); reading: the suspect's predictions on your texts "
                          "(evidence from collect --endpoint completions --echo --logprobs K: K = 1 scores the "
                          "top-1 prediction, K > 1 the top-K distribution; or --suspect-model DIR)")
    ver.add_argument("--fed-texts-clean", action="store_true",
                     help="reading mode: the fed texts were NOT produced with this key (exact null, more "
                          "power); without it, pairs occurring in the fed texts are not scored")
    ow = ver.add_argument_group(
        "open weights (--mode reading): the positional inputs are the fed texts (your served outputs: "
        "each record's response text), read by the suspect's checkpoint; its top-K next-token "
        "distribution at every position is scored (needs fingerprint[hf])")
    ow.add_argument("--suspect-model", metavar="DIR",
                    help="a local transformers causal-LM checkpoint directory (config.json and safetensors/bin "
                         "weights; nothing is downloaded) to read the fed texts with; a tokenizer in it that "
                         "differs from --tokenizer is mapped through bytes (default: none, the suspect's "
                         "evidence is read instead)")
    ow.add_argument("--reference-model", metavar="DIR", action="append",
                    help="with --suspect-model: your own model's checkpoint (never trained on the key); each "
                         "candidate then weighs max(p_suspect - p_reference, 0), which removes what every model "
                         "reading the same texts shares. Repeat the flag for several (e.g. shadow students you "
                         "trained on your clean answers): p_reference is then their mean, which averages out each "
                         "one's own noise (default: none, weights p_suspect)")
    ow.add_argument("--top-k", type=int, metavar="K",
                    help="with --suspect-model: next-token candidates kept per position (default 64)")
    ow.add_argument("--window-weights", choices=["uniform", "exposure", "sqrt-exposure", "entropy"],
                    help="with --suspect-model: how each distinct window of the fed texts is weighted (fixed before "
                         "any key is used, so the null is unchanged): uniform (every window 1), exposure (how many "
                         "times the window occurs in the fed texts: a student learned most where it saw most), "
                         "sqrt-exposure (its square root: the precision of a window mean; best with "
                         "--window-aggregate mean) or "
                         "entropy (the suspect's entropy over its top-K candidates there) (default uniform)")
    ow.add_argument("--window-aggregate", choices=["first", "mean"],
                    help="with --suspect-model: read a window that occurs at several positions of the fed texts at "
                         "its first position (first), or average the suspect's (and the reference's) probabilities "
                         "over all its positions (mean: the suspect's bias at the window, over all its contexts; "
                         "the null is unchanged) (default first)")
    ver.add_argument("--served", action="append", metavar="PATH",
                     help="the owner's served outputs: ONE path per flag (a JSONL or Parquet file, a directory or "
                          "a glob; repeat the flag for several: --served a.jsonl --served b.jsonl), or a "
                          "served-window index built with `fingerprint index build`: score only windows seen there "
                          "(the supervised setting; default: score every window)")
    scale = ver.add_argument_group("inputs at scale (directories, globs and Parquet; Dask)")
    scale.add_argument("--dask", metavar="SPEC",
                       help="verify partition by partition on Dask: local (one worker per core), local:N, or a "
                            "scheduler address tcp://host:8786 (needs fingerprint[scale]); the report is the same "
                            "as without it; default: in this process)")
    scale.add_argument("--worker-memory", metavar="SIZE",
                       help="with --dask local[:N]: each worker's memory limit, e.g. 2GiB; above 60%% of it Dask "
                            "spills held partitions to disk, so a corpus larger than memory verifies out of core "
                            "(default: the machine's memory shared among the workers)")
    scale.add_argument("--response-column", default="response", help="Parquet: the response text column "
                                                                      "(default response)")
    scale.add_argument("--prompt-column", default="prompt",
                       help="Parquet: the prompt text column (default prompt; 'none' for no prompts)")
    scale.add_argument("--messages-column", help="Parquet: a messages-list column to take the prompt from "
                                                 "(default: none, the prompt column is used)")
    scale.add_argument("--id-column", default="id", help="Parquet: the response id column (default id; rows "
                                                         "are named FILE#ROW when absent)")
    scale.add_argument("--token-column", help="Parquet: response token ids (the owner's vocabulary) instead of "
                                              "text (default: none, responses are text)")
    scale.add_argument("--prompt-token-column", help="Parquet, with --token-column: prompt token ids (default: "
                                                     "none, no prompt windows excluded)")
    ver.add_argument("--optional-stopping", action="store_true",
                     help="the evidence was gathered until a result was seen: decide on the anytime-valid p-value "
                          "(set automatically for evidence written by collect --until-detected)")
    ver.add_argument("--decoys", type=int, default=100, help="decoy keys for the null control (default 100)")
    ver.add_argument("--decoy-seed", type=int, default=0, help="seed of the decoy keys (default 0)")
    ver.add_argument("--alpha", type=float, default=1e-6, help="significance level (default 1e-6)")
    ver.add_argument("--prior", type=float, default=0.5,
                     help="prior probability that the suspect trained on your outputs (default 0.5)")
    ver.add_argument("--effect-prior-max", type=float,
                     help="H1 prior: effect ~ Uniform(0, this) (default: 0.1 green/g-bit rate, 0.5 gumbel)")
    ver.add_argument("--json", metavar="FILE", help="write the JSON report here (default: none; the verdict is "
                                                    "printed either way)")
    ver.add_argument("--markdown", metavar="FILE", help="write a Markdown report here (default: none)")
    ver.add_argument("--html", metavar="FILE", help="write a self-contained HTML report here (default: none)")
    ver.add_argument("--responses-out", metavar="FILE",
                     help="write every response's score as JSONL here (reports list at most the 1,000 most "
                          "fingerprinted; default: none)")
    ver.add_argument("--skip-invalid", action="store_true",
                     help="skip invalid records (counted in the report) instead of stopping")
    ver.add_argument("--fail-on-detect", action="store_true", help="exit 1 when the verdict is 'detected'")
    cust = ver.add_argument_group("chain of custody (checked first, before anything is scored)")
    cust.add_argument("--public-key", action="append", metavar="PUB",
                      help="the investigator's public key (from `fingerprint evidence keygen`; repeatable): every "
                           "suspect input must be evidence whose manifest it signed (--served logs are the owner's: "
                           "their chain is checked, no signature asked; default: signatures checked against "
                           "each manifest's own key only)")
    cust.add_argument("--accept-broken-chain", action="store_true",
                      help="score evidence whose hash chain or signatures do not hold (a break, a gap, a torn or "
                           "truncated tail, a rewritten history) instead of refusing it (exit 2); the report then "
                           "says, first, that the chain is broken")
    cust.add_argument("--allow-insecure-key", action="store_true",
                      help="use key files that others can write (refused otherwise; one others can read warns)")
    ver.add_argument("--quiet", "-q", action="store_true", help="no progress messages on stderr")
    ver.set_defaults(func=_cmd_verify)

    col = sub.add_parser(
        "collect", help="query a suspect's OpenAI-compatible API and keep every exchange as evidence",
        description="Send each prompt (x --samples) to the suspect's /v1/chat/completions or "
                    "/v1/completions endpoint and append one hash-chained record per exchange to the "
                    "evidence file. Rerun the same command after a crash or Ctrl-C to resume.")
    col.add_argument("prompts", metavar="PROMPTS", help='prompts file (JSONL): {"id", "prompt"} or '
                                                        '{"id", "messages"} per line')
    col.add_argument("--base-url", required=True, help="API base URL, e.g. https://api.example.com/v1")
    col.add_argument("--model", required=True, help="model name sent in each request")
    col.add_argument("--out", required=True, help="evidence file (JSONL, appended to; resumed if it exists)")
    col.add_argument("--endpoint", choices=["chat", "completions"], default="chat",
                     help="/v1/chat/completions or /v1/completions (default chat)")
    col.add_argument("--api-key-env", help="name of the environment variable holding the API key (stripped; "
                                           "printable ASCII only; sent as 'Authorization: Bearer', scrubbed from "
                                           "everything written; default: no API key sent)")
    col.add_argument("--header", action="append",
                     help="extra HTTP header 'Name: value' (repeatable); the values of headers named like secrets "
                          "(Authorization, *key*, *token*, *secret*, Cookie, *password*, *session*...) are "
                          "redacted in the evidence header and scrubbed everywhere else (default: none)")
    col.add_argument("--secret-header", action="append", metavar="NAME",
                     help="treat header NAME's value as a secret too (repeatable; default: only the names above)")
    col.add_argument("--temperature", type=float,
                     help="sampling temperature (default: not sent, the API's own default applies)")
    col.add_argument("--top-p", type=float,
                     help="nucleus sampling mass (default: not sent, the API's own default applies)")
    col.add_argument("--max-tokens", type=int, default=256, help="tokens per response (default 256)")
    col.add_argument("--seed", type=int, help="sampling seed, sample k of a prompt uses seed + k (default: not "
                                              "sent, the API samples at random)")
    col.add_argument("--n", type=int, help="choices per request (default: not sent, the API's own default, "
                                           "usually 1)")
    col.add_argument("--stop", action="append", metavar="TEXT",
                     help="stop string (repeatable; default: none sent)")
    col.add_argument("--logprobs", type=int, metavar="K",
                     help="ask for the top-K logprobs of each token (default: none asked)")
    col.add_argument("--echo", action="store_true",
                     help="completions: return the prompt's tokens with logprobs (reading mode: send the "
                          "owner's fingerprinted texts as prompts, with --logprobs 1 --max-tokens 1)")
    col.add_argument("--samples", type=int, default=1, help="requests per prompt (default 1)")
    col.add_argument("--concurrency", type=int, default=16, help="requests in flight (default 16)")
    col.add_argument("--rate", type=float, default=0.0, help="max requests per second (default: no limit)")
    col.add_argument("--connect-timeout", type=float, default=10.0, help="seconds (default 10)")
    col.add_argument("--read-timeout", type=float, default=120.0,
                     help="seconds to wait for each read of the response (default 120)")
    # the defaults are ClientLimits' (not imported here: httpx would load for every command;
    # tests/test_hostile_suspect.py checks that this help states them)
    col.add_argument("--request-deadline", type=float, metavar="SECONDS",
                     help="total seconds one attempt may take, connect to last byte: a body trickled slowly "
                          "ends there (default 120)")
    col.add_argument("--retry-after-max", type=float, metavar="SECONDS",
                     help="longest Retry-After honoured before a retry (default 60)")
    col.add_argument("--max-body", type=int, metavar="BYTES",
                     help="largest response body read, on the wire and after decompression; a larger one is a "
                          "failed attempt (default 16777216 = 16 MiB)")
    col.add_argument("--max-attempts", type=int, default=6,
                     help="attempts per exchange; a malformed, oversized or late answer is retried like a 5xx "
                          "(default 6)")
    col.add_argument("--max-requests", type=int, metavar="N",
                     help="ask at most N (prompt, sample) pairs in all, those already in the evidence included "
                          "(default: all)")
    col.add_argument("--until-detected", action="store_true",
                     help="stop as soon as the anytime-valid p-value of --key reaches --alpha (an e-process: valid "
                          "under this optional stopping, unlike a fixed-n p-value); the rule is recorded in the "
                          "evidence header and resuming continues the same e-process")
    col.add_argument("--signing-key", metavar="KEY",
                     help="the investigator's Ed25519 private key (fingerprint evidence keygen): sign chain "
                          "checkpoints in FILE.manifest.json, so rewriting, truncating or forging the evidence "
                          "needs this key (default: unsigned; sign later with fingerprint evidence sign)")
    col.add_argument("--checkpoint-every", type=int, default=1000, metavar="N",
                     help="with --signing-key: sign a checkpoint every N records and at the end (default 1000)")
    col.add_argument("--allow-insecure-key", action="store_true",
                     help="use key files that others can write (refused otherwise)")
    col.add_argument("--key", metavar="KEY", help="with --until-detected: the key file to test for")
    col.add_argument("--tokenizer", help="with --until-detected: the owner's tokenizer.json or tiktoken rank file")
    col.add_argument("--tiktoken-pattern", help="with --until-detected: pre-tokenization regex for a tiktoken rank "
                                                "file (default: Qwen's)")
    col.add_argument("--alpha", type=float, default=1e-6,
                     help="with --until-detected: stop at this anytime-valid p-value (default 1e-6)")
    col.add_argument("--check-every", type=int, default=16,
                     help="with --until-detected: re-test after this many answers (default 16)")
    col.add_argument("--quiet", "-q", action="store_true", help="no progress bar on stderr")
    col.set_defaults(func=_cmd_collect)

    ev = sub.add_parser("evidence", help="check, summarize or sign an evidence file; make the investigator's key",
                        description="Chain of custody: evidence files are hash-chained JSONL; with the "
                                    "investigator's Ed25519 key the collector signs checkpoints into "
                                    "<evidence>.manifest.json. Exit codes: 0 intact, 1 broken, 2 bad input.")
    ev_sub = ev.add_subparsers(dest="evidence_command", required=True, metavar="ACTION")
    ev_v = ev_sub.add_parser("verify", help="check the hash chain and signatures; name the first broken record "
                                            "(exit 1)",
                             description="Check every record's hash, the chain, the sequence, the tail (an "
                                         "unterminated last line is refused: it must not be scored), and the "
                                         "manifest's signed checkpoints when there is one.")
    ev_v.add_argument("file", help="evidence file (JSONL written by fingerprint collect)")
    ev_v.add_argument("--public-key", action="append", metavar="PUB",
                      help="the investigator's public key (repeatable): the evidence must carry a manifest signed "
                           "by it, covering every record (default: a manifest, if any, is checked against its own "
                           "key only)")
    ev_v.set_defaults(func=_cmd_evidence_verify)
    ev_k = ev_sub.add_parser("keygen", help="create the investigator's Ed25519 signing key and its public key",
                             description="Write an Ed25519 private key (PEM, mode 0600) to --out and its public "
                                         "key (PEM) next to it (investigator.key -> investigator.pub).")
    ev_k.add_argument("--out", required=True, help="private key file to write, e.g. investigator.key")
    ev_k.add_argument("--force", action="store_true",
                      help="overwrite existing files (atomically; a symlink is refused, never followed)")
    ev_k.set_defaults(func=_cmd_evidence_keygen)
    ev_g = ev_sub.add_parser("sign", help="sign an existing evidence file (a final checkpoint over every record)",
                             description="Sign the whole chain now: evidence collected without a signing key, or "
                                         "a collection killed before its final signature. The chain must be intact.")
    ev_g.add_argument("file", help="evidence file (JSONL written by fingerprint collect)")
    ev_g.add_argument("--signing-key", required=True, metavar="KEY",
                      help="the investigator's private key (fingerprint evidence keygen)")
    ev_g.add_argument("--allow-insecure-key", action="store_true",
                      help="use key files that others can write (refused otherwise)")
    ev_g.set_defaults(func=_cmd_evidence_sign)
    ev_s = ev_sub.add_parser("summary", help="counts, statuses, time span, settings, chain status",
                             description="What an evidence file holds: endpoint and sampling settings, counts of "
                                         "exchanges and statuses, the time span, and the chain's and manifest's "
                                         "status. Exit codes: 0 intact, 1 broken, 2 bad input.")
    ev_s.add_argument("file", help="evidence file (JSONL written by fingerprint collect)")
    ev_s.add_argument("--json", action="store_true", help="print the summary as JSON instead of aligned lines")
    ev_s.set_defaults(func=_cmd_evidence_summary)

    srv = sub.add_parser("serve", help="serve the demo teacher over an OpenAI-compatible API on 127.0.0.1",
                         description="Serve the embedded n-gram teacher (optionally fingerprinted with a key) "
                                     "at /v1/models, /v1/chat/completions and /v1/completions, with logprobs "
                                     "and echo. For demos, tests and benchmarks.")
    srv.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    srv.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    srv_keys = srv.add_mutually_exclusive_group()
    srv_keys.add_argument("--key", metavar="KEY", help="fingerprint every sampled token with this key (default: no "
                                                       "fingerprint); reported logprobs are taken before it")
    srv_keys.add_argument("--keyring", metavar="FILE",
                          help="fingerprint each request with its cohort's key from this keyring (from `fingerprint "
                               "keygen --keyring`) instead of one key: the cohort named by the header "
                               "X-Fingerprint-Cohort, else the cohort of the request's `user` field (the account "
                               "id); a request with neither, or an account an exact keyring does not know, gets "
                               "HTTP 400 unless --default-cohort is given")
    srv.add_argument("--default-cohort", metavar="ID",
                     help="with --keyring: the cohort (an id of the keyring) that serves requests naming no cohort "
                          "or an unknown account (default: refuse them with HTTP 400)")
    srv.add_argument("--allow-insecure-key", action="store_true",
                     help="use key or keyring files that others can write (refused otherwise)")
    srv.add_argument("--model-name", default="local-ngram",
                     help="model id the server reports, what collect --model sends (default local-ngram)")
    srv.add_argument("--instant", action="store_true", help="answer at once with a fixed text (benchmarks)")
    srv.add_argument("--faults", type=float, default=0.0,
                     help="inject this fraction of faults: 429, 500, slow, dropped, malformed (default 0: none)")
    srv.add_argument("--slow-seconds", type=float, default=3.0, help="delay of a slow fault (default 3)")
    srv.add_argument("--corpus", nargs="+", metavar="TEXT",
                     help="text files to train the teacher on (default: the packaged English text)")
    srv.add_argument("--bpe-vocab-size", type=int, default=8192, metavar="N",
                     help="vocabulary size of the BPE tokenizer trained for the teacher, which is also its logits "
                          "width (default 8192)")
    srv.add_argument("--model-file", metavar="FILE.npz",
                     help="serve this saved n-gram model (e.g. a demo's student.npz) instead of the demo teacher; "
                          "needs --tokenizer (default: the demo teacher)")
    srv.add_argument("--tokenizer", help="with --model-file: the tokenizer.json of the model's ids")
    srv.set_defaults(func=_cmd_serve)

    stg = sub.add_parser(
        "strength", help="CI guard: measure fingerprint strength of a release; fail on regression",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Measure how strongly a release's own responses carry the fingerprint (effect, tokens "
                    "a response needs to be detected, share detectable alone, share without any fingerprint, "
                    "a distillation proxy) and compare with thresholds and a baseline.",
        epilog="exit codes: 0 pass, 1 regression, 2 bad input, 3 internal error.\nconfig (TOML): [thresholds] min_effect_ci_low, "
               "max_tokens_to_detect_median,\nmin_detectable_share, max_unmarked_share, "
               "max_radioactivity_log10_pvalue; [tolerances]\neffect_relative_drop, tokens_relative_increase, "
               "detectable_share_drop,\nunmarked_share_increase, radioactivity_log10_increase.")
    stg.add_argument("responses", nargs="+", help="the release's responses (JSONL exchanges or evidence)")
    stg.add_argument("--key", required=True, metavar="KEY", help="key file (from fingerprint keygen)")
    stg.add_argument("--tokenizer", required=True,
                     help="the owner's tokenizer.json, or a tiktoken rank file (needs fingerprint[tiktoken])")
    stg.add_argument("--tiktoken-pattern", help="pre-tokenization regex for a tiktoken rank file (default: Qwen's)")
    stg.add_argument("--config", help="TOML file with [thresholds] and [tolerances] (default: the built-in "
                                      "values each threshold flag states)")
    stg.add_argument("--baseline", help="JSON written by a previous run's --json (the previous release; default: "
                                        "none, thresholds only)")
    stg.add_argument("--seed", type=int, default=0, help="seed of the radioactivity proxy (default 0)")
    stg.add_argument("--no-radioactivity", action="store_true", help="skip the distillation proxy")
    stg.add_argument("--radioactivity-tokens", type=int, default=50_000,
                     help="query budget of the distillation proxy (default 50000)")
    from .strength import Thresholds

    for flag, what in (("min_effect_ci_low", "floor on the lower end of the effect's 95%% interval"),
                       ("max_tokens_to_detect_median", "cap on the median tokens a response needs to be "
                                                       "detected alone"),
                       ("min_detectable_share", "floor on the share of responses detectable alone"),
                       ("max_unmarked_share", "cap on the estimated share of responses without a fingerprint"),
                       ("max_radioactivity_log10_pvalue", "cap on the distillation proxy's log10 p-value")):
        stg.add_argument(f"--{flag.replace('_', '-')}", type=float, dest=flag, metavar="X",
                         help=f"{what} (default {getattr(Thresholds(), flag)}, or the --config value)")
    stg.add_argument("--json", metavar="FILE",
                     help="write metrics and checks as JSON, usable as the next --baseline (default: none)")
    stg.add_argument("--markdown", metavar="FILE",
                     help="write a Markdown summary, e.g. $GITHUB_STEP_SUMMARY (default: none)")
    stg.add_argument("--junit", metavar="FILE", help="write JUnit XML, one test case per check (default: none)")
    stg.add_argument("--skip-invalid", action="store_true", help="skip invalid records instead of stopping")
    stg.add_argument("--quiet", "-q", action="store_true", help="no progress messages on stderr")
    stg.add_argument("--allow-insecure-key", action="store_true",
                     help="use key files that others can write (refused otherwise)")
    stg.set_defaults(func=_cmd_strength)

    demo = sub.add_parser(
        "demo", help="the embedded default investigation: teacher, distilled student, control, HTTP, verdicts",
        description="Build (or reuse) a small n-gram teacher on English text from OS packages; fingerprint "
                    "its answers; distill a student with --rho of its training tokens from them and a "
                    "control without; serve both on 127.0.0.1; collect their answers with the evidence "
                    "collector; verify each with decoy keys; print the verdicts side by side. Artifacts "
                    "(key, served outputs, evidence, reports) go to --out.")
    demo.add_argument("--out", default="fingerprint-demo", help="artifact folder (default ./fingerprint-demo)")
    demo.add_argument("--rho", type=float, default=0.10, help="student's fingerprinted fraction (default 0.10)")
    demo.add_argument("--n-prompts", type=int, default=200, metavar="N",
                      help="prompts sent to each suspect (default 200)")
    demo.add_argument("--decoys", type=int, default=100, help="decoy keys per verification (default 100)")
    demo.add_argument("--corpus", nargs="+", metavar="TEXT",
                      help="text files to train the teacher on (default: the packaged English text)")
    demo.add_argument("--max-tokens", type=int, default=100,
                      help="tokens per suspect answer, as collect --max-tokens (default 100)")
    demo.add_argument("--alpha", type=float, default=1e-6, help="significance level (default 1e-6)")
    demo.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    demo.set_defaults(func=_cmd_demo)

    rt = sub.add_parser("roundtrip", help="quick check: each scheme's fingerprint on the teacher's own text",
                        description="Train (or reuse) a small n-gram teacher on English text from OS "
                                    "packages, answer prompts with and without each scheme's "
                                    "fingerprint, and test both against the key.")
    rt.add_argument("--corpus", nargs="+", metavar="TEXT",
                    help="text files to train the teacher on (default: the packaged English text)")
    rt.add_argument("--n-prompts", type=int, default=8, metavar="N", help="prompts per scheme (default 8)")
    rt.add_argument("--max-tokens", type=int, default=50, help="tokens per response (default 50)")
    rt.add_argument("--bpe-vocab-size", type=int, default=8192, metavar="N",
                    help="vocabulary size of the BPE tokenizer trained for the teacher, which is also its logits "
                         "width (default 8192)")
    rt.add_argument("--alpha", type=float, default=1e-6, help="significance level (default 1e-6)")
    rt.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    rt.set_defaults(func=_cmd_roundtrip)
    from .scale.index_cli import add_index_parser
    add_index_parser(sub)
    _use_formatters(parser)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    return f"fingerprint: warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    warnings.formatwarning = _one_line_warning
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
    except OSError as exc:  # the environment (a full disk, a vanished file), not the program
        print(f"fingerprint: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except MemoryError:
        print("fingerprint: error: out of memory (split the input, or use verify --dask)", file=sys.stderr)
        return EXIT_INTERNAL
    except (SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # a bug (also a Rust panic in a tokenizer): one line, unless asked for more
        if getattr(args, "debug", False):
            import traceback

            traceback.print_exc()
        print(f"fingerprint: internal error: {type(exc).__name__}: {exc} (this is a bug; rerun with "
              f"--debug for the traceback and report it)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
