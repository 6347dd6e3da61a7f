"""One plug-in registry for every extension point: telemetry rules, scene rules, detectors, channels.

A plug-in is a class registered under the literal ``type`` its config entries select (as Frigate's
detectors are). Built-in plug-ins live one per file in the registry's package; the first look-up
imports every module of that package (``pkgutil``), so adding one is one file plus a config entry, with
no list to edit. A plug-in outside the package is named by the entry's ``module`` key and imported on
demand. Unknown types raise the registry's own error, listing the known ones.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T", bound=type)


class Plugins(Generic[T]):
    """Classes of one kind (``kind`` names it in errors), by type name."""

    def __init__(self, kind: str, package: str | None = None, error: type[Exception] = ValueError) -> None:
        self.kind = kind
        self.package = package
        self.error = error
        self._classes: dict[str, T] = {}
        self._scanned = package is None

    def add(self, type_name: str, cls: T) -> T:
        """Register ``cls`` under ``type_name``; a second, different class under the same name is an error
        (re-importing the same module re-registers the same class, which is fine)."""
        existing = self._classes.get(type_name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise self.error(f"{self.kind} type {type_name!r} registered twice ({existing.__name__}, {cls.__name__})")
        self._classes[type_name] = cls
        return cls

    def register(self, type_name: str) -> Callable[[T], T]:
        """Class decorator: ``@RULES.register("threshold")``; sets the class's ``type`` to the name."""

        def deco(cls: T) -> T:
            setattr(cls, "type", type_name)  # noqa: B010 - T is any class; its ``type`` says what it is
            return self.add(type_name, cls)

        return deco

    def _scan(self) -> None:
        if self._scanned or self.package is None:
            return
        self._scanned = True
        package = importlib.import_module(self.package)
        for mod in pkgutil.iter_modules(package.__path__):  # every plug-in file registers itself
            importlib.import_module(f"{self.package}.{mod.name}")

    def types(self) -> dict[str, T]:
        """Every registered plug-in, the package's own included."""
        self._scan()
        return dict(self._classes)

    def known(self) -> str:
        return ", ".join(sorted(self.types()))

    def get(self, type_name: object, module: object = None, where: str = "") -> T:
        """The class for ``type_name``, importing ``module`` first when given (a plug-in of one's own)."""
        prefix = f"{where}: " if where else ""
        if module:
            try:
                importlib.import_module(str(module))
            except ImportError as e:
                raise self.error(f"{prefix}cannot import {self.kind} module {module!r}: {e}") from None
        cls = self.types().get(str(type_name)) if isinstance(type_name, str) else None
        if cls is None:
            raise self.error(f"{prefix}unknown {self.kind} type {type_name!r} (known: {self.known()})")
        return cls
