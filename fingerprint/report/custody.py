"""The chain-of-custody part of a report, as plain text lines that the Markdown and HTML
renderers escape and lay out (the JSON document's ``custody`` field is the source)."""

from __future__ import annotations

from typing import Any

__all__ = ["custody_banner", "custody_lines"]


def custody_banner(doc: dict[str, Any]) -> str | None:
    """A warning for the top of the report when evidence whose custody does not hold was scored
    (``verify --accept-broken-chain``); None otherwise."""
    c = doc.get("custody")
    if not c or c.get("ok", True):
        return None
    return ("EVIDENCE CHAIN BROKEN: at least one evidence input failed its chain-of-custody check and was scored "
            "anyway (--accept-broken-chain). This result does not rest on intact evidence; see "
            "'Chain of custody'.")


def custody_lines(doc: dict[str, Any]) -> list[str]:
    """One line per input: chain status, records, head hash, and the manifest cited (path,
    sha256, signed head, key); empty for a document without a ``custody`` field."""
    c = doc.get("custody")
    if not c:
        return []
    out = []
    for f in c["evidence"]:
        broken = "" if f["ok"] else "BROKEN: " + "; ".join(
            (f"line {p['line']}: " if p["line"] else "") + p["problem"] for p in f["problems"]) + "; "
        line = (f"{f['path']}: {broken}chain {f['chain']}, {f['records']:,} records, head sha256 "
                f"{f['head_sha256']}")
        m = f["manifest"]
        if m is None:
            line += "; not signed (no manifest)"
        elif m["sha256"] is None or m["public_key_sha256"] is None:
            line += f"; manifest {m['path']} invalid: {m['problem']}"
        else:
            line += (f"; manifest {m['path']} sha256 {m['sha256']}: {m['checkpoints']} signed checkpoint{'' if m['checkpoints'] == 1 else 's'}, the last "
                     f"at {m['last_signed_at']} over {m['signed_records']:,} records, signed head sha256 "
                     f"{m['signed_head_sha256']}{' (final)' if m['final'] else ' (NOT final)'}, key sha256 "
                     f"{m['public_key_sha256']}"
                     + (" (the investigator's key given)" if m["trusted"] else
                        " (the manifest's own key: not checked against an investigator key)"))
        out.append(line)
    for u in c["unchained"] + c.get("owner_records", []):
        out.append(f"{u['path']}: {u['reason']}")
    return out
