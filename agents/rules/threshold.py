"""Numeric or boolean threshold on one field, with hysteresis and optional escalation.

Covers manhole cover open / tilted / displaced, water over level, battery low:

    - type: threshold
      name: manhole_tilted
      kinds: [manhole]
      field: tilt_deg
      above: 10            # fault when tilt_deg > 10 ...
      clear_below: 5       # ... and it clears only below 5 (hysteresis)
      level: yellow
      escalate: {above: 30, level: red}
"""

from __future__ import annotations

from typing import Any

from .base import Rule, RuleConfigError, RuleContext, Verdict, register


@register("threshold")
class Threshold(Rule):
    def validate(self) -> None:
        self.field = self.param("field", types=str)
        self.is_bool = "equals" in self.cfg
        if self.is_bool:
            self.equals = self.param("equals", types=bool)
            return
        has_above = "above" in self.cfg or "above_attr" in self.cfg
        has_below = "below" in self.cfg
        if has_above == has_below:
            raise RuleConfigError(f"rule {self.name!r}: give exactly one of 'above' / 'above_attr' / 'below' / 'equals'")
        self.above = self.param("above", None)
        self.above_attr = self.param("above_attr", None, str)
        self.below = self.param("below", None)
        self.clear_below = self.param("clear_below", None)
        self.clear_above = self.param("clear_above", None)
        self.unit = self.param("unit", "", str)
        esc = self.cfg.get("escalate")
        if esc is not None and (not isinstance(esc, dict) or "level" not in esc):
            raise RuleConfigError(f"rule {self.name!r}: escalate must be {{above|below: X, level: L}}")
        self.escalate = esc

    def _limit(self, device: Any) -> float:
        if self.above_attr:
            return float((getattr(device, "attrs", None) or {}).get(self.above_attr, self.above or 0))
        return float(self.above)

    def check(self, values: dict[str, Any], device: Any, active: bool, ctx: RuleContext) -> Verdict | None:
        value = values.get(self.field)
        if value is None:
            return None
        if self.is_bool:
            fault = bool(value) == self.equals
            return Verdict(fault, message=f"{self.field} is {str(bool(value)).lower()}" if fault else "")
        if self.below is not None:
            limit = float(self.below)
            clear = float(self.clear_above) if self.clear_above is not None else limit
            fault = value < limit if not active else value < clear
            cmp_ = "<"
        else:
            limit = self._limit(device)
            offset = (float(self.clear_below) - float(self.above)) if (self.clear_below is not None and self.above is not None) else 0.0
            clear = limit + offset if self.clear_below is not None else limit
            fault = value > limit if not active else value > clear
            cmp_ = ">"
        level = None
        esc = self.escalate
        if fault and esc and (("above" in esc and value > esc["above"]) or ("below" in esc and value < esc["below"])):
            level = esc["level"]
        msg = f"{self.field} {value:g}{self.unit} {cmp_} {limit:g}{self.unit}" if fault else f"{self.field} {value:g}{self.unit} back within limit"
        return Verdict(fault, level, msg)
