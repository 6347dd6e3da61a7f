"""What every benchmark shares: its command-line parser and where and how it writes its figures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def bench_parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """`python -m gridwatch.bench NAME` parser with --out defaulting to bench/results/NAME.json."""
    p = argparse.ArgumentParser(prog=f"gridwatch.bench {name}", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=RESULTS_DIR / f"{name}.json", help="JSON file for the figures")
    return p


def write_results(out: Path | None, results: dict[str, Any]) -> None:
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
