"""Operator accounts, logins and tier scopes for the console API.

Why stateless signed tokens: several api processes can serve one console behind a load balancer
(same ``web.session_secret``), and nothing has to be stored per login. The token carries only the
user name and expiry; role and scope are read from ``operators.yaml`` on every request, so removing
an account or narrowing its scope takes effect at once (after the file is reloaded at start).

Scopes follow the command tiers: an account scoped to a street (town) code sees and acts on the
incidents whose grid lies in that street, and nothing else (403 on a direct request).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gridwatch.core.yaml_files import read_yaml_list

# Which console actions each role may send (OperatorAction.action values).
ROLE_ACTIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset(),
    "operator": frozenset({"ack", "dispatch", "accept", "start", "resolve", "escalate", "comment", "confirm",
                           "reopen", "chat_import"}),
    "supervisor": frozenset({"ack", "dispatch", "accept", "start", "resolve", "escalate", "comment", "confirm",
                             "reopen", "cancel", "supervise", "chat_import"}),
    # The discipline commission (纪委监委, 纪委督单): supervises any incident in its scope whatever its
    # work-order tier (a notice with a deadline) and comments; it does not handle the work itself.
    "discipline": frozenset({"supervise", "comment"}),
}
PBKDF2_ITERATIONS = 120_000


class AuthError(ValueError):
    """operators.yaml is malformed; the message names the account and the field."""


def hash_password(password: str, *, salt: str | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """``pbkdf2_sha256$<iterations>$<salt>$<hex digest>``: what operators.yaml stores."""
    salt = salt or secrets.token_hex(8)
    dk = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"pbkdf2_sha256${iterations}${salt}${dk.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        algo, iters, salt, digest = stored.split("$")
        if algo != "pbkdf2_sha256":
            return False
        dk = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), int(iters))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(dk.hex(), digest)


def _iterations(stored: str) -> int:
    try:
        return int(stored.split("$")[1])
    except (IndexError, ValueError):
        return PBKDF2_ITERATIONS


@dataclass(frozen=True, slots=True)
class Operator:
    user: str
    name: str
    role: str
    scope: str  # area code of any tier: city, district, street (town), community (village) or grid
    password_hash: str
    name_zh: str = ""  # Chinese display name ("" = name)

    def may(self, action: str) -> bool:
        return action in ROLE_ACTIONS.get(self.role, frozenset())

    def public(self, gridmap: Any) -> dict[str, Any]:
        area = gridmap.area(self.scope)
        return {"user": self.user, "name": self.name, "name_zh": self.name_zh or self.name, "role": self.role,
                "scope": self.scope,
                "scope_name": area.name, "scope_tier": area.tier,
                "actions": sorted(a for a in ROLE_ACTIONS.get(self.role, ()) if a != "chat_import"),
                "chat_import": self.may("chat_import")}


class Accounts:
    """The accounts of operators.yaml, checked against the city's grid map at load time."""

    def __init__(self, operators: list[Operator]) -> None:
        self._by_user = {o.user: o for o in operators}
        # An unknown user costs one PBKDF2 run like a known one (same iteration count), so the answer's
        # timing does not tell which account names exist.
        iters = max((_iterations(o.password_hash) for o in operators), default=PBKDF2_ITERATIONS)
        self._dummy = hash_password(secrets.token_hex(8), iterations=iters)

    def get(self, user: str) -> Operator | None:
        return self._by_user.get(user)

    def __len__(self) -> int:
        return len(self._by_user)

    def login(self, user: str, password: str) -> Operator | None:
        """The operator when ``password`` is right; CPU-heavy (PBKDF2): call it off the event loop."""
        op = self._by_user.get(user)
        ok = verify_password(password, op.password_hash if op is not None else self._dummy)
        return op if ok and op is not None else None

    def __iter__(self) -> Any:
        return iter(self._by_user.values())

    @classmethod
    def load(cls, path: str | Path, gridmap: Any) -> Accounts:
        p = Path(path)
        ops: list[Operator] = []
        for i, raw in enumerate(read_yaml_list(p, "operators", AuthError, "operator accounts")):
            where = f"{p}: operators[{i}]"
            if not isinstance(raw, dict):
                raise AuthError(f"{where}: must be a mapping")
            user, role, scope, pw = raw.get("user"), raw.get("role"), str(raw.get("scope", "")), raw.get("password_hash")
            if not isinstance(user, str) or not user.strip():
                raise AuthError(f"{where}: user must be a non-empty string")
            where = f"{p}: operator {user!r}"
            if role not in ROLE_ACTIONS:
                raise AuthError(f"{where}: role must be one of {', '.join(ROLE_ACTIONS)}, got {role!r}")
            if scope not in gridmap:
                raise AuthError(f"{where}: scope {scope!r} is not an area code of the city's grid map")
            if not isinstance(pw, str) or not pw.startswith("pbkdf2_sha256$"):
                raise AuthError(f"{where}: password_hash must be a pbkdf2_sha256$... hash "
                                f"(make one with `gridwatch api --hash-password`)")
            if any(o.user == user for o in ops):
                raise AuthError(f"{where}: duplicate user")
            ops.append(Operator(user, str(raw.get("name", user)), role, scope, pw, str(raw.get("name_zh") or "")))
        return cls(ops)


class TokenSigner:
    """``<payload>.<signature>`` tokens (base64url JSON + HMAC-SHA256), valid until their expiry."""

    def __init__(self, secret: str, ttl_s: int) -> None:
        self.key = (secret or secrets.token_hex(32)).encode()
        self.ttl_s = ttl_s

    def issue(self, user: str, now: float | None = None) -> str:
        body = {"u": user, "exp": int((now or time.time()) + self.ttl_s), "n": secrets.token_hex(4)}
        payload = base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode()).decode().rstrip("=")
        return f"{payload}.{self._sign(payload)}"

    def verify(self, token: str, now: float | None = None) -> str | None:
        """The user name of a valid, unexpired token; None otherwise (also for any non-ASCII junk)."""
        claims = self.claims(token, now)
        return claims[0] if claims else None

    def claims(self, token: str, now: float | None = None) -> tuple[str, int] | None:
        """(user, expiry epoch s) of a valid, unexpired token; None otherwise."""
        if not token.isascii() or len(token) > 2048:
            return None
        payload, _, sig = token.partition(".")
        if not payload or not sig or not hmac.compare_digest(sig, self._sign(payload)):
            return None
        try:
            body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except ValueError:
            return None
        if not isinstance(body, dict) or not isinstance(body.get("u"), str) or not isinstance(body.get("exp"), int):
            return None
        if body["exp"] < (now or time.time()):
            return None
        return body["u"], body["exp"]

    def _sign(self, payload: str) -> str:
        return hmac.new(self.key, payload.encode(), hashlib.sha256).hexdigest()


def in_scope(scope: str, tier_codes: list[str] | set[str] | tuple[str, ...]) -> bool:
    """Whether an incident whose tier chain holds ``tier_codes`` lies inside the area ``scope``."""
    return scope in tier_codes
