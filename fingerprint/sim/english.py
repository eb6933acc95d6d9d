"""A real English corpus from text that packages install, split into paragraphs.

Sources looked for (Debian package names): ``bible-kjv`` (the ``bible`` command prints the
King James text), ``fortunes`` (``/usr/share/games/fortunes``), ``jargon-text`` (the Jargon
File) and ``dict-gcide`` (the GNU Collaborative International Dictionary of English).
Any text files can be given instead.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import InputError

__all__ = ["load_corpus", "package_corpus_sources", "cache_dir", "corpus_digest", "INSTALL_HINT"]

INSTALL_HINT = ("no English text found; install some with "
                "`apt-get install fortunes bible-kjv jargon-text` or pass text files with --corpus")

_FORTUNE_DIR = Path("/usr/share/games/fortunes")
_JARGON = Path("/usr/share/doc/jargon-text/jargon.txt.gz")
_GCIDE_DIR = Path("/usr/share/dictd")


def cache_dir() -> Path:
    """Where trained tokenizers and models are cached (``$FINGERPRINT_CACHE`` or ~/.cache)."""
    base = os.environ.get("FINGERPRINT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fingerprint")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _paragraphs(text: str, min_chars: int = 40) -> list[str]:
    paras = re.split(r"\n\s*\n", text)
    out = []
    for p in paras:
        p = re.sub(r"\s+", " ", p).strip()
        if len(p) >= min_chars:
            out.append(p)
    return out


def _bible_text() -> str:
    exe = shutil.which("bible")
    if not exe:
        return ""
    res = subprocess.run([exe, "Gen1:1-Rev22:21"], capture_output=True, timeout=120)
    text = res.stdout.decode("utf-8", errors="replace")
    # one paragraph per chapter; drop the verse numbers
    text = re.sub(r"^\s*\d+ ", "", text, flags=re.MULTILINE)
    return text


def _fortune_text() -> str:
    if not _FORTUNE_DIR.is_dir():
        return ""
    chunks = []
    for f in sorted(_FORTUNE_DIR.iterdir()):
        if f.suffix in (".dat", ".u8") or f.is_dir() or f.name.startswith("."):
            continue
        try:
            raw = f.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        chunks.append(raw.replace("\n%\n", "\n\n"))
    return "\n\n".join(chunks)


def _jargon_text() -> str:
    if not _JARGON.is_file():
        return ""
    with gzip.open(_JARGON, "rt", encoding="utf-8", errors="replace") as fh:
        return fh.read()


def _gcide_text() -> str:
    if not _GCIDE_DIR.is_dir():
        return ""
    parts = []
    for f in sorted(_GCIDE_DIR.glob("gcide*.dict*")):
        opener = gzip.open if f.suffix == ".dz" else open
        try:
            with opener(f, "rt", encoding="utf-8", errors="replace") as fh:
                parts.append(fh.read())
        except OSError:
            continue
    return "\n\n".join(parts)


def package_corpus_sources() -> dict[str, str]:
    """Text of each package source that is installed (name -> text); empty ones left out."""
    found = {"bible-kjv": _bible_text(), "fortunes": _fortune_text(), "jargon-text": _jargon_text(),
             "dict-gcide": _gcide_text()}
    return {k: v for k, v in found.items() if v.strip()}


def load_corpus(paths: Sequence[str | os.PathLike[str]] | None = None, *,
                sources: Iterable[str] | None = None) -> list[str]:
    """Paragraphs of real English text.

    ``paths``: text files to use instead of the packages. ``sources``: package sources to
    use (default: all installed). Raises :class:`InputError` with install instructions
    when nothing is found.
    """
    texts: list[str] = []
    if paths:
        for p in paths:
            path = Path(p)
            try:
                texts.append(path.read_bytes().decode("utf-8"))
            except OSError as exc:
                raise InputError(f"{path}: cannot read corpus file: {exc.strerror}") from None
            except UnicodeDecodeError as exc:
                raise InputError(f"{path}: corpus file is not UTF-8 (byte {exc.start})") from None
    else:
        found = package_corpus_sources()
        wanted = list(sources) if sources is not None else list(found)
        texts = [found[s] for s in wanted if s in found]
    paragraphs = [p for t in texts for p in _paragraphs(t)]
    if not paragraphs:
        raise InputError(INSTALL_HINT)
    return paragraphs


def corpus_digest(paragraphs: Sequence[str]) -> str:
    """A short content hash of a corpus, for cache keys."""
    h = hashlib.sha256()
    for p in paragraphs:
        h.update(p.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:16]
