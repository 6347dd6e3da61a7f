"""`gridwatch operators add`: create a real console account (the shipped ones are demo only).

Why a command: an operator should not have to hand-write a PBKDF2 hash into YAML. It asks for the
password (twice at a terminal, one line from stdin otherwise), checks the role and the scope against
the city's grid map, and appends a commented entry to the accounts file, creating it if needed.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path

from gridwatch.core.settings import Settings, SettingsError

HEADER = """# Operator accounts of the console (/console) and its API (/api/...).
# Fields: user, name, role (viewer | operator | supervisor), scope (an area code of any tier: the account
# sees and acts on incidents inside it only), password_hash (pbkdf2_sha256; add accounts with
#   gridwatch operators add USER --role operator --scope AREA_CODE --file THIS_FILE).
# Point web.operators (GRIDWATCH_WEB_OPERATORS) at this file.

operators:
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="operators_cmd", required=True)
    a = sub.add_parser("add", help="add an account to an operators file (asks for the password)")
    a.add_argument("user", help="login name")
    a.add_argument("--role", required=True, choices=["viewer", "operator", "supervisor"])
    a.add_argument("--scope", required=True, metavar="AREA_CODE",
                   help="area code of any tier (city, district, street/town, community/village, grid)")
    a.add_argument("--name", help="shown in the console and the audit log (default: the user name)")
    a.add_argument("--file", required=True, metavar="PATH",
                   help="accounts file to append to (created if missing), e.g. /etc/gridwatch/operators.yaml")


def read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    pw = getpass.getpass("password: ")
    if pw != getpass.getpass("again: "):
        raise SettingsError("the two passwords differ")
    return pw


def add(settings: Settings, args: argparse.Namespace) -> int:
    from gridwatch.core.settings import CONFIG_DIR
    from gridwatch.devices.registry import city_of
    from gridwatch.web.auth import ROLE_ACTIONS, Accounts, AuthError, hash_password

    path = Path(args.file)
    if path.resolve().parent == CONFIG_DIR.resolve():
        raise SettingsError(f"{path} is the shipped demo file; give --file a path of your own")
    gridmap = city_of(settings).gridmap
    if args.scope not in gridmap:
        raise SettingsError(f"--scope {args.scope!r} is not an area code of the city's grid map")
    assert args.role in ROLE_ACTIONS
    if path.exists():
        try:
            existing = Accounts.load(path, gridmap)
        except AuthError as e:
            raise SettingsError(str(e)) from None
        if existing.get(args.user) is not None:
            raise SettingsError(f"{path}: user {args.user!r} exists already")
    pw = read_password()
    if len(pw) < 10 or pw == f"{args.user}-demo":
        raise SettingsError("choose a password of at least 10 characters (not the demo one)")
    q = lambda text: json.dumps(text, ensure_ascii=False)  # noqa: E731  (a JSON string is a YAML string)
    entry = (f"  - user: {q(args.user)}\n    name: {q(args.name or args.user)}\n    role: {args.role}\n"
             f"    scope: \"{args.scope}\"\n    password_hash: {hash_password(pw)}\n")
    before = path.read_text(encoding="utf-8") if path.exists() else HEADER
    after = before + ("" if before.endswith("\n") else "\n") + entry
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(after, encoding="utf-8")
    try:
        accounts = Accounts.load(tmp, gridmap)
        if accounts.get(args.user) is None:
            raise AuthError(f"{path} does not end with its operators: list; add the entry by hand")
    except AuthError as e:
        tmp.unlink()
        raise SettingsError(str(e)) from None
    tmp.chmod(0o600)
    tmp.replace(path)
    print(f"added {args.user} ({args.role}, scope {args.scope}) to {path}; {len(accounts)} account(s) in it")
    return 0
