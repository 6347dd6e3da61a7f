"""No demo credentials outside the demo: the shipped operator accounts (password "<user>-demo") and
placeholder secrets (``change-me...`` from deploy/.env.example) stop `gridwatch api` at start-up.

Why at start-up and not at login: a deployment that forgot to replace them must fail loudly on day
one, not let anyone who read the README in as the city supervisor. `gridwatch demo` and the test
suite allow them explicitly with ``GRIDWATCH_DEMO_CREDENTIALS=allow``.
"""

from __future__ import annotations

from typing import Any

from gridwatch.core.settings import CONFIG_DIR, Settings, SettingsError
from gridwatch.core.yaml_files import read_yaml_list
from gridwatch.security.placeholders import ALLOW_ENV, demo_allowed, is_placeholder

__all__ = ["ALLOW_ENV", "demo_accounts", "demo_allowed", "is_placeholder", "refuse_demo_credentials"]

SHIPPED_OPERATORS = CONFIG_DIR / "operators.yaml"
HOW_TO = ("create real accounts with `gridwatch operators add USER --role operator --scope AREA_CODE "
          "--file /etc/gridwatch/operators.yaml` (asks for the password) and point web.operators "
          "(GRIDWATCH_WEB_OPERATORS) at that file")


def shipped_hashes() -> dict[str, str]:
    """user -> password hash of the shipped demo accounts."""
    out = {}
    for raw in read_yaml_list(SHIPPED_OPERATORS, "operators", SettingsError, "operator accounts"):
        if isinstance(raw, dict) and isinstance(raw.get("user"), str):
            out[raw["user"]] = str(raw.get("password_hash", ""))
    return out


def demo_accounts(accounts: Any) -> list[str]:
    """Accounts that log in with a shipped demo password (the shipped hash, or "<user>-demo" re-hashed)."""
    from .auth import verify_password

    shipped = shipped_hashes()
    hashes = set(shipped.values())
    return [op.user for op in accounts
            if op.password_hash in hashes or (op.user in shipped and verify_password(f"{op.user}-demo", op.password_hash))]


def refuse_demo_credentials(settings: Settings, accounts: Any) -> None:
    """SettingsError (saying how to make real ones) when demo accounts or placeholder secrets are in use."""
    if demo_allowed():
        return
    problems = []
    users = demo_accounts(accounts)
    if users:
        problems.append(f"the operator accounts {', '.join(users)} in {settings.config_path(settings.web.operators)} "
                        f"are the shipped demo accounts (password \"<user>-demo\"); {HOW_TO}")
    if is_placeholder(settings.web.session_secret):
        problems.append("web.session_secret (GRIDWATCH_WEB_SESSION_SECRET) is a placeholder from an example file; "
                        "set a random one, e.g. `python3 -c 'import secrets; print(secrets.token_hex(32))'`")
    if problems:
        raise SettingsError("refusing to start with demo credentials (they are for `gridwatch demo` and the "
                            "tests only):\n  - " + "\n  - ".join(problems))
