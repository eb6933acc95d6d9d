"""The public API and the package's structure: ``__all__``, the README's Python example for every
scheme, and the layout rules of DESIGN.md checked over the source (no scheme-name dispatch outside
``schemes/``, verdicts and Holm only in ``verify/``/``stats/``, a light strength module, no private
names across modules, no import cycles)."""

from __future__ import annotations

import ast
import contextlib
import hashlib
import io
import re
from pathlib import Path

import pytest

import fingerprint

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "fingerprint"
SCHEME_NAMES = ["greenlist", "gumbel", "tournament", "hf-kgw", "hf-synthid"]

EXPECTED_ALL = [
    "__version__",
    # verification
    "verify", "verify_exchanges", "verify_evidence", "VerifyOptions", "VerifyResult", "KeyResult", "DecoySummary",
    "TrajectoryPoint", "VERDICTS", "Evidence", "text_evidence", "merge",
    # inputs
    "read_exchanges", "Exchange", "ExchangeSet", "load_tokenizer",
    # keys and schemes
    "FingerprintKey", "Scheme", "SCHEMES", "make_scheme", "NullModel", "TestResult",
    # errors
    "FingerprintError", "InputError", "KeyFileError", "ParameterError", "TokenError",
]


# ---- the public names --------------------------------------------------------------------------

def test_all_is_pinned():
    assert list(fingerprint.__all__) == EXPECTED_ALL
    assert len(set(fingerprint.__all__)) == len(fingerprint.__all__)


@pytest.mark.parametrize("name", EXPECTED_ALL)
def test_every_public_name_is_importable(name):
    ns: dict = {}
    exec(f"from fingerprint import {name}", ns)
    assert ns[name] is getattr(fingerprint, name)


def test_public_errors_form_one_hierarchy():
    for name in ("InputError", "KeyFileError", "ParameterError", "TokenError"):
        assert issubclass(getattr(fingerprint, name), fingerprint.FingerprintError)
    assert set(fingerprint.SCHEMES) >= set(SCHEME_NAMES)


# ---- the README's Python example ----------------------------------------------------------------

def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- python-api:begin -->(.*?)<!-- python-api:end -->", text, re.S)
    assert m, "README.md lacks the python-api markers"
    blocks = re.findall(r"```python\n(.*?)```", m.group(1), re.S)
    assert len(blocks) == 1
    return blocks[0]


@pytest.mark.parametrize("scheme", SCHEME_NAMES)
def test_readme_python_example_runs_for_every_scheme(scheme, monkeypatch):
    import fingerprint.keys as keys

    # deterministic secrets of any length (hf-synthid's default is 240 bytes)
    counter = iter(range(1 << 30))
    monkeypatch.setattr(keys._secrets, "token_bytes",
                        lambda n: hashlib.shake_256(f"readme:{scheme}:{next(counter)}".encode()).digest(n))
    code = readme_example()
    anchor = 'FingerprintKey.generate("greenlist"'
    assert code.count(anchor) == 1
    code = code.replace(anchor, f'FingerprintKey.generate("{scheme}"')
    assert "assert " in code  # the example checks its own result
    out = io.StringIO()
    ns: dict = {"__name__": "readme_example"}
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"README.md python-api ({scheme})", "exec"), ns)
    assert ns["key"].scheme == scheme
    assert ns["r"].verdict == "detected" and ns["r"].decoys.passed
    assert out.getvalue().startswith("detected ")


# ---- the layout rules, over the source ----------------------------------------------------------

def sources() -> list[Path]:
    return sorted(PKG.rglob("*.py"))


def rel(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


def code_lines(path: Path):
    """(line number, line without its comment) of a file; docstrings stay, the patterns below are
    specific enough not to occur in prose."""
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = line.split("#", 1)[0]
        yield i, stripped


NAMES = "|".join(re.escape(n) for n in SCHEME_NAMES)
NAME_DISPATCH = [
    re.compile(r"\.name\s*(==|!=)"),
    re.compile(r"scheme\.name\s+(not\s+)?in\b"),
    re.compile(rf"(==|!=)\s*[\"']({NAMES})[\"']"),
    re.compile(rf"[\"']({NAMES})[\"']\s*(==|!=)"),
    re.compile(rf"\bin\s*[\(\[\{{]\s*[\"']({NAMES})[\"']"),
]
#: Known comparisons with a scheme name that are not dispatch: the demo reuses its own cached key
#: only if it is the greenlist key the demo makes.
NAME_ALLOWED = {("fingerprint/apps/demo.py", 'if key.vocab_size == vocab_size and key.scheme == "greenlist":')}


def test_no_scheme_name_dispatch_outside_schemes():
    bad = []
    for path in sources():
        if path.is_relative_to(PKG / "schemes"):
            continue
        for i, line in code_lines(path):
            if any(p.search(line) for p in NAME_DISPATCH) and (rel(path), line.strip()) not in NAME_ALLOWED:
                bad.append(f"{rel(path)}:{i}: {line.strip()}")
    assert not bad, "dispatch on a scheme's name outside fingerprint/schemes/:\n" + "\n".join(bad)


def test_holm_and_verdicts_only_in_verify_and_stats():
    allowed = (PKG / "verify", PKG / "stats")
    bad = []
    for path in sources():
        if any(path.is_relative_to(a) for a in allowed):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                f = node.func
                if (isinstance(f, ast.Name) and f.id == "holm") or (isinstance(f, ast.Attribute) and f.attr == "holm"):
                    bad.append(f"{rel(path)}:{node.lineno}: holm(...) call")
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else [])
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name) and n.id.startswith("VERDICT"):
                        bad.append(f"{rel(path)}:{node.lineno}: assigns {n.id}")
    assert not bad, "\n".join(bad)


def imports_of(path: Path, *, module_level_only: bool):
    """ImportFrom/Import nodes of a file (all of them, or those run when the module is imported:
    not in function bodies, not under ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if not module_level_only:
        return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]

    out = []

    def visit(body):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                out.append(node)
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                sub = getattr(node, field, None)
                if isinstance(sub, list):
                    visit(sub)

    visit(tree.body)
    return out


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(path: Path, node: ast.ImportFrom | ast.Import) -> list[str]:
    """Absolute module names a statement names (the target, and ``from X import name`` where
    ``X.name`` is a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        pkg = module_name(path).split(".")
        if path.name != "__init__.py":
            pkg = pkg[:-1]
        pkg = pkg[:len(pkg) - (node.level - 1)]
        target = ".".join(pkg + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [target] + [f"{target}.{a.name}" for a in node.names]


def test_strength_imports_nothing_from_sim_or_apps():
    path = PKG / "strength.py"
    bad = [f"line {n.lineno}: {ast.unparse(n)}" for n in imports_of(path, module_level_only=False)
           if any(t == f"fingerprint.{sub}" or t.startswith(f"fingerprint.{sub}.")
                  for t in resolve(path, n) for sub in ("sim", "apps"))]
    assert not bad, "fingerprint/strength.py imports models or applications:\n" + "\n".join(bad)


def test_no_private_names_imported_across_modules():
    bad = []
    for path in sources():
        for node in imports_of(path, module_level_only=False):
            if not isinstance(node, ast.ImportFrom):
                continue
            if not (node.level or (node.module or "").startswith("fingerprint")):
                continue
            for a in node.names:
                if a.name.startswith("_") and not (a.name.startswith("__") and a.name.endswith("__")):
                    bad.append(f"{rel(path)}:{node.lineno}: {ast.unparse(node)}")
    assert not bad, "private names imported from another module:\n" + "\n".join(bad)


def import_graph() -> dict[str, set[str]]:
    """Module -> modules whose code runs when it is imported (module-level imports; a target's
    packages that are not the importer's own ancestors count too, since importing
    ``fingerprint.a.b`` runs ``fingerprint/a/__init__.py``)."""
    modules = {module_name(p): p for p in sources()}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for node in imports_of(path, module_level_only=True):
            for target in resolve(path, node):
                if target not in modules:
                    continue
                edges.add(target)
                parts = target.split(".")
                for i in range(2, len(parts)):
                    anc = ".".join(parts[:i])
                    if anc in modules and not (name == anc or name.startswith(anc + ".")):
                        edges.add(anc)
        graph[name] = edges - {name}  # a package's `from . import x` names the package itself
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with a cycle (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1 or v in graph[v]:
                    out.append(sorted(comp))
    return out


def test_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"a"}}) == [["a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_import_graph_is_acyclic():
    graph = import_graph()
    assert "fingerprint" in graph and "fingerprint.verify.pipeline" in graph
    assert "fingerprint.verify" in graph["fingerprint"]  # re-exports count
    assert "fingerprint.verify.pipeline" in graph["fingerprint.verify"]
    found = cycles(graph)
    listed = "\n".join("{" + ", ".join(c) + "}" for c in found)
    assert not found, "import cycles between the package's modules:\n" + listed
