"""Files the demo and simulator leave behind: proposals (JSONL), KPIs (JSON), a PNG chart."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from operators.codec import proposal_dict
from state.records import Proposal


def write_proposals(path: Path, proposals: Iterable[Proposal]) -> int:
    count = 0
    with path.open("wb") as handle:
        for proposal in proposals:
            handle.write(orjson.dumps(proposal_dict(proposal)) + b"\n")
            count += 1
    return count


def write_json(path: Path, body: Mapping[str, Any]) -> None:
    path.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))


def comparison_table(columns: Mapping[str, Mapping[str, float]], rows: Sequence[str]) -> str:
    """A plain-text table: one row per KPI, one column per run."""
    names = list(columns)
    width = max(len(r) for r in rows) + 2
    cols = [max(14, len(n) + 2) for n in names]
    lines = ["KPI".ljust(width) + "".join(n.rjust(c) for n, c in zip(names, cols, strict=True))]
    lines.append("-" * (width + sum(cols)))
    for row in rows:
        cells = []
        for name, col in zip(names, cols, strict=True):
            value = columns[name].get(row, "")
            text = (
                "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
            )
            cells.append(text.rjust(col))
        lines.append(row.ljust(width) + "".join(cells))
    return "\n".join(lines)


def fill_chart(path: Path, series: Mapping[str, Sequence[float]], title: str) -> bool:
    return series_chart(path, series, "network unit fill rate", title)


def write_markdown_table(
    path: Path, columns: Mapping[str, Mapping[str, Any]], rows: Sequence[str], title: str
) -> None:
    names = list(columns)
    lines = [f"## {title}", "", "| KPI | " + " | ".join(names) + " |"]
    lines.append("| --- |" + " ---: |" * len(names))
    for row in rows:
        cells = ["-" if columns[n].get(row) is None else str(columns[n].get(row)) for n in names]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")


def _pyplot() -> Any | None:
    """matplotlib's pyplot on a file backend, or None (with a one-line hint, once) when the
    lab extra is not installed: charts are the only thing the demo needs it for."""
    try:
        import matplotlib
    except ModuleNotFoundError:
        global _HINTED
        if not _HINTED:
            print("(no charts: pip install 'stockshift[lab]' adds matplotlib)", file=sys.stderr)
            _HINTED = True
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


_HINTED = False


def series_chart(
    path: Path, series: Mapping[str, Sequence[float]], ylabel: str, title: str
) -> bool:
    """Writes the chart; False when matplotlib is not installed."""
    plt = _pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for name, values in series.items():
        ax.plot(range(1, len(values) + 1), values, marker=".", label=name)
    ax.set_xlabel("simulated day")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def distribution_chart(path: Path, series: Mapping[str, Sequence[float]], title: str) -> None:
    plt = _pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    names = list(series)
    ax.boxplot([list(series[n]) for n in names], showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), names)
    ax.set_ylabel("days of supply")
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
