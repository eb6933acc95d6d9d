"""Per-cohort keys over real HTTP: the local server picks each request's key from its cohort
(header X-Fingerprint-Cohort, else the OpenAI ``user`` field), driven by the official client."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fingerprint.errors import ParameterError
from fingerprint.keyring import Keyring
from fingerprint.sim.server import COHORT_HEADER, ServedModel, serve, serve_in_process
from fingerprint.verify.keyring import verify_keyring_tokens
from fingerprint.verify.result import VERDICT_DETECTED, VerifyOptions

openai = pytest.importorskip("openai")  # installed by the test extra; a hard dependency of these tests

COHORTS = ["acme", "globex", "initech", "umbrella"]
OPTIONS = VerifyOptions(n_decoys=20)


@pytest.fixture(scope="module")
def ring(teacher):
    return Keyring.from_seed("test-keyring-http", "greenlist", vocab_size=teacher.vocab_size, cohorts=COHORTS,
                             delta=3.0)


@pytest.fixture(scope="module")
def server(teacher, ring):
    with serve(ServedModel(teacher.model, teacher.tokenizer, keyring=ring)) as srv:
        yield srv


def client_of(url):
    return openai.OpenAI(base_url=url, api_key="unused", max_retries=0)


def prompts_of(teacher, n, start):
    return [teacher.paragraphs[(start + 37 * i) % len(teacher.paragraphs)][:100] for i in range(n)]


def verify_texts(teacher, ring, texts, prompts):
    """Keyring verification of ``texts`` (their prompts' windows excluded; one prompt per text)."""
    assert len(texts) == len(prompts)
    ids, _ = zip(*(teacher.tokenizer.encode_batch([t]) for t in texts))
    p_ids, _ = zip(*(teacher.tokenizer.encode_batch([p]) for p in prompts))
    return verify_keyring_tokens(list(ids), ring=ring, prompt_tokens=list(p_ids), options=OPTIONS)


def test_each_account_is_served_with_its_cohort_key(server, teacher, ring):
    """Answers sent as `user` = a cohort id identify exactly that cohort, and the global test
    detects; the same prompts and seeds under another cohort identify that one instead."""
    client = client_of(server.url)
    prompts = prompts_of(teacher, 4, 11)
    before = server.cohorts_served
    for cohort in COHORTS:
        texts, asked = [], []
        for i, prompt in enumerate(prompts):
            chat = client.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}],
                                                  user=cohort, max_tokens=60, n=2, seed=i, temperature=1.0)
            texts += [c.message.content for c in chat.choices]
            asked += [prompt] * len(chat.choices)
        result = verify_texts(teacher, ring, texts, asked)
        assert result.flagged == (cohort,), (cohort, [(c.cohort, c.test.log10_pvalue) for c in result.cohorts])
        assert result.verdict == VERDICT_DETECTED and result.detected, (cohort, result.reason)
        assert result.global_log10_pvalue <= math.log10(OPTIONS.alpha), result.global_log10_pvalue
        for other in COHORTS:
            if other != cohort:
                assert result.cohort(other).test.log10_pvalue > -3, (cohort, other)
    after = server.cohorts_served
    assert {c: after.get(c, 0) - before.get(c, 0) for c in COHORTS} == {c: len(prompts) for c in COHORTS}


def test_the_header_names_the_cohort_and_overrides_user(server, teacher, ring):
    """Completions with X-Fingerprint-Cohort: the header's cohort serves, whatever `user` says."""
    client = client_of(server.url)
    prompts = prompts_of(teacher, 4, 503)
    texts, asked = [], []
    for i, prompt in enumerate(prompts):
        comp = client.completions.create(model="m", prompt=prompt, max_tokens=60, n=2, seed=i, user="acme",
                                         extra_headers={COHORT_HEADER: "initech"})
        texts += [c.text for c in comp.choices]
        asked += [prompt] * len(comp.choices)
    result = verify_texts(teacher, ring, texts, asked)
    assert result.flagged == ("initech",), [(c.cohort, c.test.log10_pvalue) for c in result.cohorts]
    assert result.detected and result.global_log10_pvalue <= math.log10(OPTIONS.alpha)


def test_requests_without_a_known_cohort_get_400(server):
    client = client_of(server.url)
    msgs = [{"role": "user", "content": "In the beginning"}]
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="m", messages=msgs, max_tokens=4, user="mallory")
    err = exc.value.body
    assert "mallory" in err["message"] and err["param"] == "user" and err["code"] == "invalid_cohort", err
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model="m", prompt="In the beginning", max_tokens=4)
    assert COHORT_HEADER in exc.value.body["message"] and exc.value.body["code"] == "missing_cohort"
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model="m", prompt="In the beginning", max_tokens=4, user="acme",
                                  extra_headers={COHORT_HEADER: "hooli"})
    assert "hooli" in exc.value.body["message"] and COHORT_HEADER in exc.value.body["message"]
    with pytest.raises(openai.BadRequestError) as exc:  # the bare HTTP answer: OpenAI's error shape
        client.chat.completions.create(model="m", messages=msgs, max_tokens=4, extra_body={"user": 7})
    assert "'user' must be a string" in exc.value.body["message"]
    # a known account is still served
    ok = client.chat.completions.create(model="m", messages=msgs, max_tokens=4, user="acme")
    assert ok.choices[0].finish_reason == "length"


def test_default_cohort_serves_unknown_accounts(teacher, ring):
    served = ServedModel(teacher.model, teacher.tokenizer, keyring=ring, default_cohort="umbrella")
    with serve(served, instant=True) as srv:
        client = client_of(srv.url)
        for user in ("mallory", None, "globex"):
            kw = {} if user is None else {"user": user}
            client.completions.create(model="m", prompt="Hello", max_tokens=4, **kw)
        assert srv.cohorts_served == {"umbrella": 2, "globex": 1}
        with pytest.raises(openai.BadRequestError):  # a header naming no cohort is an error, not the default
            client.completions.create(model="m", prompt="Hello", max_tokens=4, extra_headers={COHORT_HEADER: "x"})


def test_hash_ring_routes_accounts_to_their_buckets(teacher):
    hashed = Keyring.from_seed("test-keyring-http-hash", "greenlist", vocab_size=teacher.vocab_size, cohorts=3)
    with serve(ServedModel(teacher.model, teacher.tokenizer, keyring=hashed), instant=True) as srv:
        client = client_of(srv.url)
        accounts = [f"user-{i}" for i in range(12)]
        for a in accounts:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi"}], user=a,
                                           max_tokens=2)
        want: dict[str, int] = {}
        for a in accounts:
            want[hashed.cohort_for(a)] = want.get(hashed.cohort_for(a), 0) + 1
        assert srv.cohorts_served == want and len(want) > 1
        with pytest.raises(openai.BadRequestError):  # no account and no default
            client.completions.create(model="m", prompt="Hello", max_tokens=2)


def test_keyring_server_in_its_own_process(teacher, ring):
    """serve_in_process forks with the keyring (never pickled): the child samples with cohort keys."""
    served = ServedModel(teacher.model, teacher.tokenizer, keyring=ring)
    prompt = "And God said"
    with serve_in_process(served) as url:
        client = client_of(url)
        got = {c: client.completions.create(model="m", prompt=prompt, max_tokens=24, seed=5, user=c).choices[0].text
               for c in ("acme", "globex")}
        with pytest.raises(openai.BadRequestError):
            client.completions.create(model="m", prompt=prompt, max_tokens=4, user="mallory")
    tokens = served.encode(prompt)
    for c, text in got.items():
        want = served.generate(tokens, max_tokens=24, temperature=1.0, top_p=1.0, n=1, seed=5, stop=[],
                               top_logprobs=None, cohort=c)[0]["text"]
        assert text == want, c
    assert got["acme"] != got["globex"]


def test_served_model_checks_its_keyring_arguments(teacher, ring):
    with pytest.raises(ParameterError, match="not both"):
        ServedModel(teacher.model, teacher.tokenizer, keyring=ring,
                    scheme=ring.cohort_key("acme").scheme_object())
    with pytest.raises(ParameterError, match="'nobody'"):
        ServedModel(teacher.model, teacher.tokenizer, keyring=ring, default_cohort="nobody")
    small = Keyring.from_seed("small", "greenlist", vocab_size=1000, cohorts=["a"])
    with pytest.raises(ParameterError, match="vocab_size 1000"):
        ServedModel(teacher.model, teacher.tokenizer, keyring=small)
    served = ServedModel(teacher.model, teacher.tokenizer, keyring=ring)
    assert served.scheme_for("acme") is served.scheme_for("acme")  # derived once, then cached
    assert served.resolve_cohort(None, "globex") == "globex"
    assert served.resolve_cohort("initech", "globex") == "initech"
    with pytest.raises(ParameterError, match="user"):
        served.resolve_cohort(None, None)
    tokens = served.encode("In the beginning")
    a, b = (served.generate(tokens, max_tokens=30, temperature=1.0, top_p=1.0, n=1, seed=3, stop=[],
                            top_logprobs=None, cohort=c)[0]["ids"] for c in ("acme", "globex"))
    assert not np.array_equal(a, b)


def test_serve_cli_refuses_bad_keyring_options(tmp_path, capsys):
    from fingerprint.cli import EXIT_BAD_INPUT, main

    path = tmp_path / "ring.json"
    Keyring.from_seed("cli", "greenlist", vocab_size=8192, cohorts=["a", "b"]).save(path)
    with pytest.raises(SystemExit):
        main(["serve", "--keyring", str(path), "--key", str(path)])
    assert "not allowed with" in capsys.readouterr().err
    for args, message in ((["--default-cohort", "a"], "--default-cohort a: needs --keyring"),
                          (["--keyring", str(path), "--default-cohort", "zz"], "'zz' is not a cohort of --keyring"),
                          (["--key", str(path)], "is a keyring file (a key per cohort): serve it with --keyring"),
                          (["--keyring", str(tmp_path / "none.json")], "none.json")):
        assert main(["serve", *args]) == EXIT_BAD_INPUT, args
        assert message in capsys.readouterr().err, args


def test_serve_cli_with_a_keyring_over_http(tmp_path, teacher):
    """`fingerprint serve --keyring` in its own process: cohorts' accounts answered, others refused."""
    import signal
    import subprocess
    import sys

    path = tmp_path / "ring.json"
    cli_ring = Keyring.from_seed("cli", "greenlist", vocab_size=teacher.vocab_size, cohorts=["a", "b"])
    cli_ring.save(path)
    with open(tmp_path / "stderr.txt", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "fingerprint.cli", "serve", "--keyring", str(path),
                                 "--port", "0"], stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            line = proc.stdout.readline()  # the server prints its URL once it listens
            assert " on http://127.0.0.1:" in line, (line, (tmp_path / "stderr.txt").read_text())
            assert "2 cohorts" in line and "else HTTP 400" in line, line
            url = line.split(" on ", 1)[1].split(" ", 1)[0]
            client = client_of(url)
            ok = client.completions.create(model="m", prompt="And God said", max_tokens=8, seed=2, user="b")
            served = ServedModel(teacher.model, teacher.tokenizer, keyring=cli_ring)
            want = served.generate(served.encode("And God said"), max_tokens=8, temperature=1.0, top_p=1.0, n=1,
                                   seed=2, stop=[], top_logprobs=None, cohort="b")[0]["text"]
            assert ok.choices[0].text == want
            with pytest.raises(openai.BadRequestError, match="mallory"):
                client.completions.create(model="m", prompt="And God said", max_tokens=4, user="mallory")
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()
