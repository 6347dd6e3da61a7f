"""The pictures an incident references, as the console shows them and /api/evidence serves them.

Why here, below the api: the store files each incident's refs (incident_evidence) from the same
extraction the console's detail view uses, so what the detail view links is what /api/evidence
finds in the store.
"""

from __future__ import annotations

from typing import Any

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif")
REF_MAX = 500  # longer refs are not filed (incident_evidence.ref); /api/evidence does not serve them


def evidence_refs(inc: dict[str, Any]) -> list[dict[str, str]]:
    """Pictures an incident carries: snapshot refs in event evidence, and residents' media_url."""
    out: list[dict[str, str]] = []
    for s in inc.get("sources", []):
        for item in s.get("evidence", []) or []:
            vals = [item] if isinstance(item, str) else list(item.values()) if isinstance(item, dict) else []
            for v in vals:
                if isinstance(v, str) and v.lower().split("?")[0].endswith(IMAGE_SUFFIXES):
                    url = v if v.startswith(("http://", "https://")) else "/api/evidence/" + v.lstrip("/")
                    out.append({"source": s["id"], "url": url, "ref": v})
        if s.get("media_url"):
            out.append({"source": s["id"], "url": s["media_url"], "ref": s["media_url"]})
    return out


def evidence_keys(inc: dict[str, Any]) -> set[str]:
    """The keys /api/evidence/<key> looks up: each ref without its leading slashes (as the URL path
    carries it), those up to REF_MAX characters."""
    return {k for e in evidence_refs(inc) if isinstance(e["ref"], str)
            for k in [e["ref"].lstrip("/")] if k and len(k) <= REF_MAX}
