"""Reading the project's YAML config files with one kind of error message.

Every config loader (settings, rules, incidents, cameras, operators, service catalogue) wants the same
thing: the file's content, or an error of the loader's own class that names the file and says what is
wrong with it (unreadable, not YAML, wrong top-level shape), never a bare yaml or OS traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def read_yaml(path: str | Path, error: type[Exception], what: str) -> Any:
    """The parsed document of ``path`` (None for an empty file); ``what`` names the file in errors."""
    import yaml

    p = Path(path)
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise error(f"cannot read {what} {p}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise error(f"{what} {p} is not UTF-8 text: {e.reason} at byte {e.start}") from None
    except yaml.YAMLError as e:
        raise error(f"{what} {p} is not valid YAML: {e}") from None


def read_yaml_list(path: str | Path, key: str, error: type[Exception], what: str) -> list[Any]:
    """The list under the top-level ``key`` of a YAML mapping file (``operators:``, ``services:``, ...)."""
    return yaml_list(read_yaml(path, error, what), key, error, f"{what} {path}")


def yaml_list(doc: Any, key: str, error: type[Exception], where: str) -> list[Any]:
    """``doc[key]`` when ``doc`` is a mapping holding a list there, else ``error`` naming ``where``."""
    if not isinstance(doc, dict) or not isinstance(doc.get(key), list):
        raise error(f"{where}: expected a mapping with a top-level '{key}:' list")
    return doc[key]
