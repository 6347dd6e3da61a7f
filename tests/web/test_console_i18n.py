"""The console's string tables (gridwatch/web/i18n/) and the language plumbing around them.

Chinese first: every key the page uses exists in both tables, every code the backend can send
(level, status, action, category, event type, service, department, tier, device kind) has a label,
and the zh-CN table holds no English word outside a short allow-list of codes and units. The
rendered pages are walked for English in tests/web/test_console_browser.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gridwatch.agents.lifecycle import TRANSITIONS
from gridwatch.agents.routing import load_incident_config
from gridwatch.devices.codes import TIERS
from gridwatch.devices.registry import KINDS
from gridwatch.pipeline.schemas.events import LEVELS
from gridwatch.pipeline.schemas.incidents import STATUSES
from gridwatch.web.auth import ROLE_ACTIONS
from gridwatch.web.catalog import Catalog
from gridwatch.web.prefs import I18N_DIR, LANGUAGES, Preferences, pick_language

STATIC = Path(__file__).resolve().parents[2] / "gridwatch" / "web" / "static"
SERVICES = Path(__file__).resolve().parents[2] / "gridwatch" / "config" / "services.yaml"
# Latin text allowed in Chinese strings: units, file formats, code standards, the other language's own name
ALLOWED_LATIN = {"CSV", "CJ", "T", "A", "V", "lx", "English"}
LATIN_WORD = re.compile(r"[A-Za-z]+")


def table(lang: str) -> dict[str, str]:
    return json.loads((I18N_DIR / f"{lang}.json").read_text(encoding="utf-8"))


def latin_words(text: str) -> set[str]:
    """Latin words left after taking out {placeholders}."""
    return set(LATIN_WORD.findall(re.sub(r"\{\w+\}", "", text))) - ALLOWED_LATIN


def test_tables_have_the_same_keys_and_placeholders() -> None:
    zh, en = table("zh-CN"), table("en")
    assert set(zh) == set(en), set(zh) ^ set(en)
    for key in zh:
        assert zh[key].strip() and en[key].strip(), key
        assert set(re.findall(r"\{\w+\}", zh[key])) == set(re.findall(r"\{\w+\}", en[key])), key
    assert LANGUAGES[0] == "zh-CN" and set(LANGUAGES) == {p.stem for p in I18N_DIR.glob("*.json")}


def test_no_english_word_in_the_chinese_table() -> None:
    zh = table("zh-CN")
    leaks = {k: latin_words(v) for k, v in zh.items() if not k.startswith(("_meta.", "lang.")) and latin_words(v)}
    assert not leaks, leaks
    assert zh["level.red"] == "红色预警" and zh["level.yellow"] == "黄色预警" and zh["level.blue"] == "蓝色预警"
    assert [zh[f"ticket.{k}"] for k in ("place", "dispatch", "handle", "supervise", "evaluate")] == [
        "群众点单", "平台派单", "部门办单", "纪委督单", "群众评单"]


def test_every_key_the_page_uses_exists() -> None:
    zh = table("zh-CN")
    js = (STATIC / "app.js").read_text(encoding="utf-8")
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    used = set(re.findall(r"""\bt\(\s*["']([\w.-]+)["']""", js))  # t("key", ...)
    used |= set(re.findall(r'"((?:act|def|refuse|stats)\.[\w-]+)"', js))  # keys held in constants
    used |= set(re.findall(r'data-i18n="([\w.-]+)"', html))
    used |= {k for attr in re.findall(r'data-i18n-attr="([^"]+)"', html) for k in
             (pair.split(":", 1)[1] for pair in attr.split(";"))}
    assert len(used) > 100
    assert sorted(used - set(zh)) == []


def test_every_code_the_backend_sends_has_a_label() -> None:
    zh = table("zh-CN")
    cfg = load_incident_config()
    catalog = Catalog.load(SERVICES)
    want = [f"level.{x}" for x in LEVELS] + [f"status.{x}" for x in STATUSES] + [f"tier.{x}" for x in TIERS]
    want += [f"action.{x}" for x in TRANSITIONS] + [f"history.{x}" for x in TRANSITIONS if x != "confirm"]
    want += [f"action.{x}" for r in ROLE_ACTIONS.values() for x in r if x != "chat_import"]
    want += [f"history.{x}" for x in ("created", "merged", "confirmed", "overdue", "auto_resolve", "auto_close")]
    want += [f"role.{x}" for x in ROLE_ACTIONS] + [f"kind.{x}" for x in KINDS]
    for name, g in cfg.groups.items():
        want += [f"cat.{name}", f"dept.{g.department}"] + [f"type.{x}" for x in g.event_types]
    want += [f"service.{s.service_code}" for s in catalog.services]
    assert sorted(k for k in want if k not in zh) == []


def test_open311_services_answer_in_the_asked_language() -> None:
    catalog = Catalog.load(SERVICES)
    zh = [s.to_open311("zh-CN") for s in catalog.services]
    en = [s.to_open311("en") for s in catalog.services]
    assert zh[0]["service_name"] == "井盖缺失、打开或损坏" and en[0]["service_name"].startswith("Manhole cover")
    for z, e in zip(zh, en, strict=True):
        assert z["service_code"] == e["service_code"] and z["keywords"] == e["keywords"]
        for key in ("service_name", "description", "group"):
            assert not latin_words(z[key]) and z[key] != e[key], (z, key)
    hazard = catalog.get("manhole_cover").definition("zh-CN")["attributes"][1]  # type: ignore[union-attr]
    assert hazard["description"] == "现在是否有危险？" and [v["key"] for v in hazard["values"]] == [
        "open_hole", "loose", "cracked"] and hazard["values"][0]["name"] == "路面有敞开的坑口"


@pytest.mark.parametrize(("header", "lang"), [
    ("", "zh-CN"), ("zh-CN,zh;q=0.9", "zh-CN"), ("en-US,en;q=0.9", "en"), ("fr-FR, en;q=0.5, zh;q=0.8", "zh-CN"),
    ("de", "zh-CN"), ("en", "en"), ("zh_CN", "zh-CN"), ("en;q=0.9, zh;q=0.9", "en"), ("en;q=bad", "zh-CN"),
])
def test_pick_language(header: str, lang: str) -> None:
    assert pick_language(header) == lang


def test_preferences_are_kept_per_user_and_checked(tmp_path: Path) -> None:
    prefs = Preferences(tmp_path / "p.json")
    assert prefs.get("ansha") == {}
    assert prefs.update("ansha", {"lang": "en"}) == {"lang": "en"}
    prefs.update("city", {"lang": "zh-CN"})
    again = Preferences(tmp_path / "p.json")  # another api process on the same machine
    assert again.get("ansha") == {"lang": "en"} and again.get("city") == {"lang": "zh-CN"}
    with pytest.raises(ValueError, match="lang must be one of"):
        prefs.update("ansha", {"lang": "fr"})
    with pytest.raises(ValueError, match="unknown preference"):
        prefs.update("ansha", {"theme": "dark"})
    assert again.get("ansha") == {"lang": "en"}
