"""Data flows one way, and so do imports: a module may import its own layer or the layers below it.

The layers, lowest first (a module belongs to the longest prefix that names it):

core        settings, options, YAML files, process helpers — imports nothing else of gridwatch
contracts   record schemas, frame wire format
transport   the Kafka and MQTT plumbing every process shares, and the patches to third-party code
domain      the city (devices, grid map, simulator) and the vision models
pipeline    sources, outputs, record/replay
store       the system of record (tables, records, the topic feed that fills it)
agents      the Faust agents (telemetry rules, vision, fusion, incidents, channels, sinks)
services    HTTP API and console, MQTT accounts and certificates, the store's monthly export (it
            reports the API's statistics)
top         app, cli (with `gridwatch store`), demo, stack, benchmarks: they wire everything together

Every import counts, also one inside a function: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("gridwatch.core",)),
    ("contracts", ("gridwatch.pipeline.schemas",)),
    ("transport", ("gridwatch.pipeline.kafka_io", "gridwatch.pipeline.record_batch", "gridwatch.pipeline.mqtt_client",
                   "gridwatch.compat")),
    ("domain", ("gridwatch.devices", "gridwatch.models")),
    ("pipeline", ("gridwatch.pipeline.sources", "gridwatch.pipeline.outputs", "gridwatch.pipeline.recordreplay")),
    ("store", ("gridwatch.store",)),
    ("agents", ("gridwatch.agents",)),
    ("services", ("gridwatch.web", "gridwatch.security", "gridwatch.store.export")),
    ("top", ("gridwatch", "gridwatch.store.commands")),
]


def layer_of(module: str) -> int:
    """Index in LAYERS of the longest prefix that names ``module``."""
    best, best_len = len(LAYERS) - 1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    return best


def project_modules() -> dict[str, Path]:
    """Every module of the installed package, by dotted name, from pyproject's package-dir mapping."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    tops = {pkg: ROOT / folder for pkg, folder in mapping.items() if pkg.count(".") <= 1}
    out: dict[str, Path] = {}
    for pkg, folder in tops.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("").parts
            # a sub-folder mapped as its own package (gridwatch.pipeline under gridwatch/) is walked there
            name = ".".join((pkg, *rel)).removesuffix(".__init__")
            if any(name == other or name.startswith(other + ".")
                   for other in tops if other != pkg and other.startswith(pkg + ".")):
                continue
            out[name] = path
    return out


def imports_of(module: str, path: Path, source: str | None = None) -> list[tuple[str, int]]:
    """The gridwatch modules ``module`` imports, with line numbers (relative imports resolved)."""
    tree = ast.parse(source if source is not None else path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.append((target, node.lineno))
    return [(t, line) for t, line in found if t == "gridwatch" or t.startswith("gridwatch.")]


def upward_imports(modules: dict[str, Path], sources: dict[str, str] | None = None) -> list[str]:
    bad = []
    for module, path in sorted(modules.items()):
        own = layer_of(module)
        for target, line in imports_of(module, path, (sources or {}).get(module)):
            if layer_of(target) > own:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {module} ({LAYERS[own][0]}) imports "
                           f"{target} ({LAYERS[layer_of(target)][0]})")
    return bad


def test_every_module_is_found():
    modules = project_modules()
    assert "gridwatch.core.settings" in modules and "gridwatch.pipeline.sources.mqtt_bridge" in modules
    assert "gridwatch.agents.rules.engine" in modules and "gridwatch.models.detectors.base" in modules
    assert not any(m.startswith("gridwatch.pipeline.") and "/gridwatch/" in str(p) for m, p in modules.items())


def test_no_module_imports_a_layer_above_its_own():
    bad = upward_imports(project_modules())
    assert not bad, "imports against the data flow (move the shared piece down a layer):\n" + "\n".join(bad)


def test_the_check_catches_an_upward_import():
    """The premise: a core module importing the app, even lazily or relatively, is reported."""
    modules = project_modules()
    fake = {"gridwatch.core.settings": "def f():\n    from gridwatch.app import create_app\n",
            "gridwatch.pipeline.schemas.codec": "from ..sources import capture\n"}
    bad = upward_imports({m: modules[m] for m in fake}, fake)
    assert len(bad) == 2, bad
    assert "gridwatch.core.settings (core) imports gridwatch.app (top)" in bad[0]
    assert "codec (contracts) imports gridwatch.pipeline.sources (pipeline)" in bad[1]
