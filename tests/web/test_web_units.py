"""Pieces of the web side one at a time: chat classifier, offline geocoder, rate limit, logins, XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from gridwatch.core.settings import CONFIG_DIR
from gridwatch.web.auth import Accounts, AuthError, TokenSigner, hash_password, in_scope, verify_password
from gridwatch.web.catalog import Catalog
from gridwatch.web.geocode import Geocoder
from gridwatch.web.open311 import xml_of
from gridwatch.web.ratelimit import TokenBucket
from tests.web.samples import CITY

CAT = Catalog.load(CONFIG_DIR / "services.yaml")


@pytest.mark.parametrize("text,code", [
    ("南宁路35号路灯不亮", "streetlight_out"), ("Street light out on the corner", "streetlight_out"),
    ("井盖丢失,很危险", "manhole_cover"), ("manhole cover missing", "manhole_cover"),
    ("路口积水严重", "flooding"), ("flooding under the bridge", "flooding"),
    ("垃圾堆放没人清理", "garbage"), ("路面塌陷出现大坑", "road_damage"), ("楼下违停堵住消防通道", "illegal_parking"),
    ("夜里施工噪音扰民", "noise"), ("有人反映情况", "other"), ("", "other"),
])
def test_chat_text_classifier(text: str, code: str) -> None:
    assert CAT.classify(text)[0] == code


def test_geocoder_finds_places_in_the_citys_own_tables() -> None:
    g = Geocoder(CITY.registry, CITY.gridmap)
    lamp = next(d for d in CITY.registry.by_kind("streetlight"))
    road, no = lamp.name.removeprefix("Streetlight ").rsplit(" #", 1)
    assert g.lookup(f"{road} #{no}").device_id == lamp.id
    assert g.lookup(f"{road}{no}号").device_id == lamp.id
    assert g.lookup(f"near {lamp.id} please").device_id == lamp.id
    assert g.lookup(road).how == "road"
    p = g.lookup("Yunping Community")
    assert p.how == "area" and CITY.gridmap.locate(p.lat, p.lon).startswith("330102001001")
    assert g.lookup("30.2541, 120.0687").how == "coordinates"
    assert g.lookup("Atlantis") is None and g.lookup("") is None


def test_token_bucket_allows_bursts_then_says_when_to_retry() -> None:
    now = [0.0]
    b = TokenBucket(60, 3, clock=lambda: now[0])  # 1 token/s, burst 3
    assert [b.take("k") for _ in range(3)] == [0, 0, 0]
    wait = b.take("k")
    assert wait == pytest.approx(1.0) and TokenBucket.retry_after(wait) == "1"
    assert b.take("other") == 0  # per client
    now[0] = 1.0
    assert b.take("k") == 0 and b.wait("k") > 0


def test_passwords_tokens_and_accounts(tmp_path) -> None:
    h = hash_password("s3cret")
    assert verify_password("s3cret", h) and not verify_password("S3cret", h) and not verify_password("x", "junk")
    s = TokenSigner("key", 60)
    t = s.issue("ansha", now=1000)
    assert s.verify(t, now=1030) == "ansha" and s.verify(t, now=1061) is None
    assert TokenSigner("other", 60).verify(t, now=1030) is None
    acc = Accounts.load(CONFIG_DIR / "operators.yaml", CITY.gridmap)
    assert acc.login("ansha", "ansha-demo").scope == "330102001" and acc.login("ansha", "nope") is None
    bad = tmp_path / "ops.yaml"
    bad.write_text(f"operators:\n  - {{user: x, role: operator, scope: '999', password_hash: '{h}'}}\n")
    with pytest.raises(AuthError, match="scope '999'"):
        Accounts.load(bad, CITY.gridmap)
    chain = [a.code for a in CITY.gridmap.chain("330102001001005")]
    assert in_scope("330102001", chain) and in_scope("330100", chain) and not in_scope("330102002", chain)


def test_open311_xml_shape() -> None:
    root = ET.fromstring(xml_of("service_requests", [{"service_request_id": "r1", "media_url": None, "lat": 1.5,
                                                      "note": "<&>"}]))
    assert root.tag == "service_requests" and root.findtext("request/service_request_id") == "r1"
    assert root.find("request/media_url").text is None and root.findtext("request/note") == "<&>"
