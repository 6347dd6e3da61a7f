"""The Open311 service catalogue (``config/services.yaml``) and the chat-record classifier built on it.

Why one file for both: the keywords a resident client shows next to a service are the same words a
grid worker writes in a chat record about it, so the category guess and the catalogue cannot drift.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gridwatch.core.yaml_files import read_yaml, yaml_list

CODE_RE = re.compile(r"^[a-z0-9_]{1,64}$")
DATATYPES = ("string", "number", "datetime", "text", "singlevaluelist", "multivaluelist")


class CatalogError(ValueError):
    """services.yaml is malformed; the message names the service and the field."""


@dataclass(frozen=True, slots=True)
class Attribute:
    code: str
    datatype: str
    required: bool
    order: int
    description: str
    values: tuple[tuple[str, str], ...] = ()  # (key, name) for list datatypes
    variable: bool = True
    description_zh: str = ""  # Chinese twins ("" = the English text)
    value_names_zh: tuple[str, ...] = ()

    def to_open311(self, lang: str = "en") -> dict[str, Any]:
        zh = lang == "zh-CN"
        d: dict[str, Any] = {
            "variable": self.variable, "code": self.code, "datatype": self.datatype, "required": self.required,
            "datatype_description": "", "order": self.order,
            "description": (self.description_zh if zh else "") or self.description,
        }
        if self.values:
            names_zh = self.value_names_zh or ("",) * len(self.values)
            d["values"] = [{"key": k, "name": (nz if zh else "") or n} for (k, n), nz in zip(self.values, names_zh,
                                                                                             strict=True)]
        return d


@dataclass(frozen=True, slots=True)
class Service:
    service_code: str
    service_name: str
    description: str
    group: str
    type: str
    keywords: tuple[str, ...]
    attributes: tuple[Attribute, ...] = field(default=())
    zh: dict[str, str] = field(default_factory=dict, compare=False)  # service_name / description / group in Chinese

    def to_open311(self, lang: str = "en") -> dict[str, Any]:
        """The Open311 service entry in ``lang`` ("zh-CN" or "en"; a missing Chinese text falls back to English)."""
        zh = self.zh if lang == "zh-CN" else {}
        return {
            "service_code": self.service_code, "service_name": zh.get("service_name") or self.service_name,
            "description": zh.get("description") or self.description, "metadata": bool(self.attributes),
            "type": self.type, "keywords": ", ".join(self.keywords), "group": zh.get("group") or self.group,
        }

    def definition(self, lang: str = "en") -> dict[str, Any]:
        return {"service_code": self.service_code,
                "attributes": [a.to_open311(lang) for a in sorted(self.attributes, key=lambda a: a.order)]}


class Catalog:
    """Services by code, in file order, plus the keyword classifier."""

    def __init__(self, services: list[Service], fallback: str) -> None:
        self.services = services
        self._by_code = {s.service_code: s for s in services}
        if fallback not in self._by_code:
            raise CatalogError(f"fallback service {fallback!r} is not in the catalogue")
        self.fallback = fallback

    def get(self, code: str) -> Service | None:
        return self._by_code.get(code)

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def classify(self, text: str) -> tuple[str, list[str]]:
        """(service_code, keywords that matched): most keyword hits wins, file order breaks ties."""
        low = text.lower()
        best, best_hits = self.fallback, []
        for s in self.services:
            hits = [k for k in s.keywords if k.lower() in low]
            if len(hits) > len(best_hits):
                best, best_hits = s.service_code, hits
        return best, best_hits

    @classmethod
    def load(cls, path: str | Path) -> Catalog:
        p = Path(path)
        services: list[Service] = []
        doc = read_yaml(p, CatalogError, "service catalogue")
        for i, raw in enumerate(yaml_list(doc, "services", CatalogError, f"service catalogue {p}")):
            where = f"{p}: services[{i}]"
            if not isinstance(raw, dict):
                raise CatalogError(f"{where}: must be a mapping")
            code = raw.get("service_code")
            if not isinstance(code, str) or not CODE_RE.match(code):
                raise CatalogError(f"{where}: service_code must match {CODE_RE.pattern}, got {code!r}")
            where = f"{p}: service {code}"
            if any(s.service_code == code for s in services):
                raise CatalogError(f"{where}: duplicate service_code")
            kws = raw.get("keywords") or []
            if not isinstance(kws, list) or not all(isinstance(k, str) and k.strip() for k in kws):
                raise CatalogError(f"{where}: keywords must be a list of non-empty strings")
            attrs = tuple(_attribute(a, f"{where} attribute #{j}") for j, a in enumerate(raw.get("attributes") or []))
            for key in ("service_name", "description"):
                if not isinstance(raw.get(key), str) or not raw[key].strip():
                    raise CatalogError(f"{where}: {key} must be a non-empty string")
            stype = raw.get("type", "realtime")
            if stype not in ("realtime", "batch", "blackbox"):
                raise CatalogError(f"{where}: type must be realtime, batch or blackbox")
            zh = {}
            for key in ("service_name", "description", "group"):
                v = raw.get(f"{key}_zh")
                if v is not None and (not isinstance(v, str) or not v.strip()):
                    raise CatalogError(f"{where}: {key}_zh must be a non-empty string when given")
                if v:
                    zh[key] = v.strip()
            services.append(Service(code, raw["service_name"].strip(), raw["description"].strip(),
                                    str(raw.get("group", "")), stype, tuple(k.strip() for k in kws), attrs, zh))
        if not services:
            raise CatalogError(f"{p}: no services")
        return cls(services, str(doc.get("fallback", services[-1].service_code)))


def _attribute(raw: Any, where: str) -> Attribute:
    if not isinstance(raw, dict) or not isinstance(raw.get("code"), str) or not CODE_RE.match(raw["code"]):
        raise CatalogError(f"{where}: needs a code matching {CODE_RE.pattern}")
    dt = raw.get("datatype", "string")
    if dt not in DATATYPES:
        raise CatalogError(f"{where}: datatype must be one of {', '.join(DATATYPES)}")
    values = tuple((str(v["key"]), str(v["name"])) for v in raw.get("values") or [])
    names_zh = tuple(str(v.get("name_zh") or "") for v in raw.get("values") or [])
    if dt.endswith("valuelist") and not values:
        raise CatalogError(f"{where}: a {dt} needs values")
    return Attribute(raw["code"], dt, bool(raw.get("required", False)), int(raw.get("order", 0)),
                     str(raw.get("description", "")), values, description_zh=str(raw.get("description_zh") or ""),
                     value_names_zh=names_zh if any(names_zh) else ())
