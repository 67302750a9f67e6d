"""Shared benchmark plumbing: every bench records its best time under (group, implementation), and
the terminal summary prints each group's ratios against its peers measured in the same run.

Ratios, not absolute times, are what the issues ask for: these machines are shared and noisy.
Set BIDFCL_BENCH_JSON=path to also write the table as JSON.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict

import pytest

_RESULTS: dict[str, dict[str, float]] = defaultdict(dict)


@pytest.fixture
def record():
    """record(group, implementation, benchmark) after a benchmark ran: keeps its min time."""

    def _record(group: str, impl: str, benchmark) -> None:
        stats = benchmark.stats.stats if hasattr(benchmark.stats, "stats") else benchmark.stats
        _RESULTS[group][impl] = float(stats.min)

    return _record


def ratio_table() -> list[str]:
    lines = []
    for group, impls in sorted(_RESULTS.items()):
        if not impls:
            continue
        base_name = next(iter(impls))
        times = ", ".join(f"{name} {t * 1e3:.2f} ms" for name, t in impls.items())
        lines.append(f"{group}: {times}")
        for name, t in impls.items():
            if name == base_name:
                continue
            base_t = impls[base_name]
            if t >= base_t:
                lines.append(f"    {name} / {base_name} = {t / base_t:.2f}x")
            else:
                lines.append(f"    {base_name} / {name} = {base_t / t:.2f}x")
    return lines


def pytest_terminal_summary(terminalreporter):
    lines = ratio_table()
    if not lines:
        return
    terminalreporter.section("bidfcl ratios (min times, same run)")
    for line in lines:
        terminalreporter.write_line(line)
    path = os.environ.get("BIDFCL_BENCH_JSON")
    if path:
        with open(path, "w") as fh:
            json.dump(_RESULTS, fh, indent=2)
