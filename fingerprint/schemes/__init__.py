"""Fingerprint schemes: each module both embeds (logits -> samples) and scores (tokens -> scores).

``SCHEMES`` maps a scheme name to its class; :func:`make_scheme` builds one from a secret.
"""

from __future__ import annotations

from typing import Any

from ..errors import ParameterError
from .base import ReproducedScheme, Scheme
from .greenlist import GreenlistScheme
from .gumbel import GumbelScheme
from .hf_kgw import HfKgwScheme
from .hf_synthid import HfSynthIdScheme
from .tournament import TournamentScheme
from .vllm_gumbel import VllmGumbelScheme

__all__ = ["Scheme", "ReproducedScheme", "GreenlistScheme", "GumbelScheme", "TournamentScheme", "HfKgwScheme",
           "HfSynthIdScheme", "SCHEMES", "make_scheme", "scheme_class", "register_scheme"]

SCHEMES: dict[str, type[Scheme]] = {
    cls.name: cls for cls in (GreenlistScheme, GumbelScheme, TournamentScheme, HfKgwScheme, HfSynthIdScheme,
                              VllmGumbelScheme)
}


def register_scheme(cls: type[Scheme]) -> type[Scheme]:
    """Add a scheme class to the registry (usable as a class decorator); keys, ``keygen``,
    ``verify``, ``strength`` and the transformers adapter then know it by ``cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, Scheme)):
        raise ParameterError(f"register_scheme expects a Scheme subclass, got {cls!r}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ParameterError(f"{cls.__name__} must define a non-empty class attribute 'name'")
    if name in SCHEMES and SCHEMES[name] is not cls:
        raise ParameterError(f"a scheme named {name!r} is already registered ({SCHEMES[name].__name__})")
    SCHEMES[name] = cls
    return cls


def scheme_class(name: str) -> type[Scheme]:
    """The class of scheme ``name``; :class:`ParameterError` naming the known ones otherwise."""
    try:
        return SCHEMES[name]
    except (KeyError, TypeError):
        raise ParameterError(f"unknown scheme {name!r}; known schemes: {', '.join(sorted(SCHEMES))}") from None


def make_scheme(name: str, secret: bytes, vocab_size: int, **params: Any) -> Scheme:
    """Build scheme ``name`` keyed with ``secret`` over a vocabulary of ``vocab_size`` ids."""
    return scheme_class(name)(secret, vocab_size, **params)
