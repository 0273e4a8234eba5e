"""The benchmark tables of notebook 09 as data, and their Markdown: one format for the notebook, the report of
``fewshot run`` and the README.

Notebook 09 writes them into its ``metrics.json`` under ``metrics["benchmark"]``::

    {"extractor": "emoji-features-v1",
     "tasks": {task_id: {"title": "...", "protocol": "...", "columns": ["fid", ...], "figure": "x.png"}},
     "tables": {task_id: [row, ...]}}

Each ``row`` is ``{"method", "label", "status", "note", "seeds", <column>: cell, ...}``:

* ``status``: ``"measured"`` (a generator evaluated here), ``"reference"`` (a floor or ceiling that is not a
  generator: copying the shots, real images, the unadapted source), ``"not shipped yet"`` (the method's
  long-trained result is not in ``data/`` yet: no numbers, never zeros) or ``"other task"`` (shipped, but
  trained on other shots; its numbers are for its own task and are labelled so);
* a ``cell`` is ``{"mean", "std", "n", "per_seed"}`` over the row's ``seeds`` (``std`` is ``None`` with one
  seed: it is unknown, not 0); a column a row does not measure is absent.

A sweep's runs (e.g. 09 over ``target_styles``) are merged by :func:`merge_benchmarks` into the same format, with
``"sweep_parameters": [name, ...]`` at the top, a ``"sweep"`` label on every row (``"target_styles=twemoji"``) and,
per task, ``"figures": [{"sweep": label, "path": "<run folder>/<figure>"}]`` (one picture row per sweep point);
:func:`markdown_tables` renders it with a leading "sweep point" column.

This module only formats (no torch, no package imports), so the runner and ``scripts/update_readme_tables.py``
can use it without loading models; :mod:`fewshot_lib.benchmark` computes the rows.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "COLUMN_LABELS",
    "LOWER_IS_BETTER",
    "ROW_KEYS",
    "cell_text",
    "markdown_table",
    "markdown_tables",
    "best_rows",
    "find_row",
    "merge_benchmarks",
]

#: Keys of a row that are not metric cells.
ROW_KEYS = ("method", "label", "status", "note", "seeds")

#: Column headings (the metric names of ``fewshot_lib.metrics``), with the direction of "better".
COLUMN_LABELS = {
    "fid": "FID ↓",
    "kid": "KID ↓",
    "precision": "precision ↑",
    "recall": "recall ↑",
    "lpips_diversity": "LPIPS diversity ↑",
    "intra_cluster_lpips": "intra-cluster LPIPS ↑",
    "class_consistency": "class consistency ↑",
    "style_share": "target-style share ↑",
    "recognisability": "recognisability ↑",
    "near_copies": "near-copies ↓",
    "train_cpu_minutes": "training CPU-min",
    "parameters": "parameters (G)",
}
LOWER_IS_BETTER = {"fid", "kid", "near_copies"}
#: The key of a merged row that names its sweep point (not a metric cell, not one of :data:`ROW_KEYS`).
SWEEP_KEY = "sweep"
#: Columns that describe a row's cost, not its quality (never ranked).
COST_COLUMNS = ("train_cpu_minutes", "parameters")


def _num(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def cell_text(cell: dict | None, column: str = "") -> str:
    """``"40.9 ± 1.4"``, ``"47.6 (one seed)"``, ``"1.1 M"`` (parameters) or ``"—"`` (not measured)."""
    if not cell or not cell.get("n"):
        return "—"
    mean, std = cell["mean"], cell.get("std")
    if column == "parameters":
        return f"{mean / 1e6:.2f} M" if mean >= 1e5 else f"{mean:,.0f}"
    if std is None:
        return f"{_num(mean)} (one seed)" if cell["n"] == 1 else _num(mean)
    return f"{_num(mean)} ± {std:.2g}"


def _seeds_text(row: dict) -> str:
    seeds = row.get("seeds") or []
    if not seeds:
        return "—"
    return ", ".join(str(s) for s in seeds)


def markdown_table(rows: list[dict], columns: list[str], sweep_column: str | None = None) -> list[str]:
    """One task's rows as Markdown lines: method, status, seeds, then every column, then the note.

    ``sweep_column``: the heading of a leading column holding each row's sweep point (a merged table)."""
    head = ["method", "status", "seeds"] + [COLUMN_LABELS.get(c, c) for c in columns] + ["note"]
    head = ([sweep_column] if sweep_column else []) + head
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [str(row.get(SWEEP_KEY, "—"))] if sweep_column else []
        cells += [row.get("label") or row["method"], row["status"], _seeds_text(row)]
        cells += [cell_text(row.get(c), c) for c in columns]
        cells.append((row.get("note") or "").replace("|", "/"))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _in_folder(folder: str, path: str) -> str:
    return f"{folder}/{path}" if folder else path


def markdown_tables(benchmark: dict, heading: str = "###", figures_dir: str | None = None) -> list[str]:
    """Every task of a ``metrics["benchmark"]`` dict: a heading, its protocol, its table and (with
    ``figures_dir``) its picture row, e.g. ``figures_dir="09_benchmark"`` in a run folder's report.

    A merged dict (:func:`merge_benchmarks`) gets a "sweep point" column and one picture row per sweep point;
    its figure paths already start with their run folder, so ``figures_dir=""`` (the report's folder) fits it."""
    sweep_column = "sweep point" if benchmark.get("sweep_parameters") else None
    lines: list[str] = []
    for task, spec in benchmark["tasks"].items():
        lines += [f"{heading} {spec['title']}", ""]
        if spec.get("protocol"):
            lines += [spec["protocol"], ""]
        lines += markdown_table(benchmark["tables"][task], list(spec["columns"]), sweep_column)
        if figures_dir is not None and spec.get("figures"):
            for fig in spec["figures"]:
                lines += [
                    "",
                    f"![{spec['title']}, {fig['sweep']}: one picture row per method]"
                    f"({_in_folder(figures_dir, fig['path'])})",
                ]
        elif figures_dir is not None and spec.get("figure"):
            lines += [
                "",
                f"![{spec['title']}: one picture row per method]({_in_folder(figures_dir, spec['figure'])})",
            ]
        lines.append("")
    extractor = benchmark.get("extractor")
    if extractor:
        lines.append(
            f"Every number through `{extractor}` (the project's offline emoji network): comparable between rows, "
            "never with the papers' Inception/LPIPS numbers. Mean ± sample std over seeds; one seed is marked."
        )
    return lines


def best_rows(rows: list[dict], column: str, status: str = "measured") -> list[dict]:
    """The rows of ``status`` that measured ``column``, best first (by mean; lower first for ``fid``, ``kid``,
    ``near_copies``)."""
    have = [r for r in rows if r["status"] == status and (r.get(column) or {}).get("n")]
    have = [r for r in have if math.isfinite(r[column]["mean"])]
    return sorted(have, key=lambda r: r[column]["mean"], reverse=column not in LOWER_IS_BETTER)


def find_row(rows: list[dict], method: str) -> dict[str, Any] | None:
    """The row of ``method`` (``None`` when the table has none)."""
    return next((r for r in rows if r["method"] == method), None)


def merge_benchmarks(points: list[tuple[str, str, dict]], parameters: list[str]) -> dict:
    """The benchmark dicts of a sweep's runs as one: ``points`` is ``[(label, run folder, benchmark), ...]`` in
    sweep order, ``parameters`` the swept names. Every task any point measured is kept (in first-seen order);
    its rows are each point's rows in turn, labelled with the point (:data:`SWEEP_KEY`); its columns are the
    union of the points' columns, so a point that lacks one shows "—" rather than losing the column."""
    tasks: dict[str, dict] = {}
    tables: dict[str, list[dict]] = {}
    extractors: list[str] = []
    for label, folder, bench in points:
        if bench.get("extractor") and bench["extractor"] not in extractors:
            extractors.append(bench["extractor"])
        for task, spec in bench["tasks"].items():
            merged = tasks.setdefault(
                task, {**{k: v for k, v in spec.items() if k != "figure"}, "figures": []}
            )
            merged["columns"] = list(merged["columns"]) + [
                c for c in spec["columns"] if c not in merged["columns"]
            ]
            if spec.get("figure"):
                merged["figures"].append({SWEEP_KEY: label, "path": f"{folder}/{spec['figure']}"})
            tables.setdefault(task, []).extend(
                {**row, SWEEP_KEY: label} for row in bench["tables"].get(task, [])
            )
    return {
        # several extractors would make the rows incomparable: the text names all of them
        "extractor": ", ".join(extractors) if extractors else None,
        "sweep_parameters": list(parameters),
        "tasks": tasks,
        "tables": tables,
    }
