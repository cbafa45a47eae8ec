"""``make bench``: run every benchmark and write their figures into BENCHMARKS.md."""

from __future__ import annotations

import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCHES = [
    ("Bulk import into chDB", ["bench.bulk_import"]),
    ("Topology throughput vs raw consume", ["bench.topology"]),
    ("Topology profile: one kline per record", ["bench.topology_profile"]),
    (
        "Topology profile: one kline per record, 5m+1h resampling",
        ["bench.topology_profile", "--resample", "5m,1h"],
    ),
    (
        "Topology profile: 500 klines per record",
        ["bench.topology_profile", "--batch", "500", "--klines", "150000"],
    ),
    ("Continuity scan per symbol-year", ["bench.continuity_scan"]),
    ("Rolling features per closed candle", ["bench.features"]),
    ("Features topology: rows/s into chDB and event -> row latency", ["bench.features_topology"]),
    ("Feature rebuild of a year of bulk-loaded history", ["bench.feature_rebuild"]),
    ("Scoring: rows/s vs CatBoost batch predict, latency, reports, training time", ["bench.scoring"]),
    ("News: stories/s vs feedparser's parse rate, poll -> stored latency", ["bench.news"]),
    ("Risk: score rows/s through the risk topology vs the batch backtest", ["bench.risk"]),
    ("Gap detection to repair", ["bench.gap_repair"]),
    ("API: REST recent latency and WebSocket fan-out", ["bench.api_bench"]),
    ("Peak memory of the demo", ["bench.demo_rss"]),
]
#: the hand-written reading of the figures against the targets, kept across runs
SUMMARY = "## Summary against the targets"


def main() -> None:
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {datetime.now(UTC):%Y-%m-%d %H:%M UTC}; machine: {platform.machine()}, "
        f"{platform.processor() or 'cpu'}, Python {platform.python_version()}. Each section prints its own "
        "baseline measured in the same run. Other processes may share the two cores: figures are "
        "best/median of rounds where a benchmark repeats.",
        "",
    ]
    for title, module in BENCHES:
        if not (REPO / "bench" / f"{module[0].split('.')[-1]}.py").exists():
            continue
        print(f"== {title}", flush=True)
        proc = subprocess.run(
            [sys.executable, "-m", *module], cwd=REPO, capture_output=True, text=True, check=False
        )
        out = proc.stdout.strip() or proc.stderr.strip()[-2000:]
        print(out, flush=True)
        lines += [f"## {title}", "", "```", out, "```", ""]
    old = (REPO / "BENCHMARKS.md").read_text() if (REPO / "BENCHMARKS.md").exists() else ""
    if SUMMARY in old:
        lines.append(old[old.index(SUMMARY) :].rstrip() + "\n")
    (REPO / "BENCHMARKS.md").write_text("\n".join(lines))
    print("wrote BENCHMARKS.md")


if __name__ == "__main__":
    main()
