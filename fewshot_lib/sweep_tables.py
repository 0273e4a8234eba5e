"""One table per swept notebook: the runs of one notebook with different parameters side by side, whether they
came from one ``fewshot run --sweep NAME=v1,v2`` or from separately executed runs gathered by ``fewshot merge``.

``results.json`` holds them under ``"sweeps"``, one entry per notebook that ran more than once::

    {"notebook": "04_cdc.ipynb",
     "parameters": ["target_style"],                 # what differs between the runs: the sweep's axes
     "points": [{"label": "target_style=fluent_3d", "values": {"target_style": "fluent_3d"},
                 "run": "04_cdc__target_style=fluent_3d", "output": "04_cdc.ipynb", "status": "ok",
                 "figures": ["curves.png"]}, ...],
     "headline": {"columns": ["runtime_seconds"],    # the notebook's scalar metrics
                  "rows": [{"point": label, "run": name, "status": "ok", "runtime_seconds": 33.1}, ...]},
     "methods": {"columns": ["fid", ...],            # its metrics["summary"] (method → metric → mean/std/n)
                 "rows": [{"point": label, "method": "cdc", "fid": {"mean", "std", "n"}}, ...]},
     "benchmark": {...}}                             # 09 only: benchmark_tables.merge_benchmarks of its points

A point that failed keeps its row (status and error, no values): a sweep never loses a point silently.

**The axes** are the parameters whose values differ between the runs of the notebook: the injected
``parameters`` (``run_dir`` left out: every run has its own) and the requested sweep values the notebook does not
declare. Runs that differ in nothing (the same notebook run twice) are told apart by their run name. A seed sweep
is one like any other: each row is a block of seeds (``seed, seed + 1, …``: the experiment protocol).

This module only reads and formats (no torch, no package imports but :mod:`fewshot_lib.benchmark_tables`), so the
runner's report can use it without loading models.
"""

from __future__ import annotations

import json
from typing import Any

from .benchmark_tables import cell_text, merge_benchmarks, markdown_tables

__all__ = ["aggregate_sweeps", "point_labels", "markdown_sweeps", "markdown_merged_benchmark", "SEED_NOTE"]

RUNNER_OWNED = ("run_dir",)  # set by the runner for every run: never an axis
SEED_NOTE = (
    "Each `seed` row is a block of seeds: the notebook ran seed, seed + 1, … itself (its experiment protocol); "
    "overlapping blocks are refused before a run starts."
)
FIGURES_PER_POINT = 4  # as many as the report's Figures section shows per notebook run


def _settings(run: dict[str, Any]) -> dict[str, Any]:
    """What a run was given: its injected parameters, plus the swept names it does not declare (a sweep point
    still tells its runs apart when the notebook ignores the name)."""
    injected = {k: v for k, v in (run.get("parameters") or {}).items() if k not in RUNNER_OWNED}
    extra = {k: v for k, v in (run.get("sweep_point") or {}).items() if k not in injected}
    return {**injected, **extra}


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _axes(runs: list[dict[str, Any]]) -> list[str]:
    settings = [_settings(r) for r in runs]
    names: list[str] = []
    for s in settings:
        names += [k for k in s if k not in names]
    missing = object()
    return [n for n in names if len({_key(s.get(n, missing)) for s in settings}) > 1]


def _groups(runs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The runs of each notebook run more than once, in run order (the sweep's order)."""
    by_notebook: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by_notebook.setdefault(r.get("notebook") or r["name"], []).append(r)
    return {nb: rs for nb, rs in by_notebook.items() if len(rs) > 1}


def _point(run: dict[str, Any], axes: list[str]) -> dict[str, Any]:
    if not axes:
        return {"label": f"run={run['name']}", "values": {"run": run["name"]}}
    settings = _settings(run)
    values = {a: settings.get(a) for a in axes}
    return {"label": ", ".join(f"{a}={v}" for a, v in values.items()), "values": values}


def point_labels(runs: list[dict[str, Any]]) -> dict[str, str]:
    """``{run name: sweep point label}`` for every run of a notebook that ran more than once."""
    return {r["name"]: _point(r, _axes(rs))["label"] for rs in _groups(runs).values() for r in rs}


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _summary(metrics: dict[str, Any]) -> dict[str, dict[str, dict]]:
    """``metrics["summary"]`` when it has the experiment protocol's shape (method → metric → mean/std/n)."""
    summary = metrics.get("summary")
    if not isinstance(summary, dict):
        return {}
    return {
        method: {m: c for m, c in cells.items() if isinstance(c, dict) and "mean" in c}
        for method, cells in summary.items()
        if isinstance(cells, dict)
    }


def _union(keys_lists: list[list[str]]) -> list[str]:
    out: list[str] = []
    for keys in keys_lists:
        out += [k for k in keys if k not in out]
    return out


def aggregate_sweeps(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``"sweeps"`` entries of ``results.json`` for the notebook runs ``runs`` (dicts as in ``results.json``):
    one per notebook that ran more than once, in the order the notebooks first ran."""
    sweeps = []
    for notebook, group in _groups(runs).items():
        axes = _axes(group)
        points, headline_rows, method_rows, benchmarks = [], [], [], []
        for r in group:
            point = _point(r, axes)
            metrics = r.get("metrics") or {}  # a failed run's partial metrics still show, next to its status
            status = r["status"] if r["status"] == "ok" else f"failed ({(r.get('error') or {}).get('ename')})"
            points.append(
                {
                    **point,
                    "run": r["name"],
                    "output": r.get("output", ""),
                    "status": status,
                    "figures": list(r.get("figures") or []),
                }
            )
            headline_rows.append(
                {"point": point["label"], "run": r["name"], "status": status, **_scalars(metrics)}
            )
            method_rows += [
                {"point": point["label"], "method": method, **cells}
                for method, cells in _summary(metrics).items()
            ]
            if isinstance(metrics.get("benchmark"), dict):
                benchmarks.append((point["label"], r["name"], metrics["benchmark"]))
        entry: dict[str, Any] = {
            "notebook": notebook,
            "parameters": axes or ["run"],
            "points": points,
            "headline": {
                "columns": _union([list(_scalars(r.get("metrics") or {})) for r in group]),
                "rows": headline_rows,
            },
        }
        if method_rows:
            columns = _union([[k for k in row if k not in ("point", "method")] for row in method_rows])
            entry["methods"] = {"columns": columns, "rows": method_rows}
        if benchmarks:
            entry["benchmark"] = merge_benchmarks(benchmarks, entry["parameters"])
        sweeps.append(entry)
    return sweeps


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |"


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    return [_row(head), "|" + "---|" * len(head)] + [_row(r) for r in rows]


def markdown_sweeps(sweeps: list[dict[str, Any]], heading: str = "###") -> list[str]:
    """Each swept notebook: its headline table (one row per sweep point, one column per swept parameter, then
    every scalar metric), its per-method table (when it wrote a summary), a pointer to its merged benchmark
    tables, then each point's figures under a line naming the point."""
    lines: list[str] = []
    for sweep in sweeps:
        axes = sweep["parameters"]
        points = {p["label"]: p for p in sweep["points"]}
        lines += [f"{heading} {sweep['notebook']} over {', '.join(axes)}", ""]
        if "seed" in axes:
            lines += [SEED_NOTE, ""]
        columns = sweep["headline"]["columns"]
        rows = []
        for row in sweep["headline"]["rows"]:
            p = points[row["point"]]
            link = f"[{row['run']}]({row['run']}/{p['output']})" if p["output"] else row["run"]
            rows.append(
                [p["values"].get(a) for a in axes]
                + [link, row["status"]]
                + [_fmt(row.get(c)) for c in columns]
            )
        lines += _table(axes + ["run", "status"] + columns, rows)
        if "methods" in sweep:
            m_columns = sweep["methods"]["columns"]
            m_rows = [
                [points[row["point"]]["values"].get(a) for a in axes]
                + [row["method"]]
                + [cell_text(row.get(c), c) for c in m_columns]
                for row in sweep["methods"]["rows"]
            ]
            lines += ["", "Per method (mean ± std over each point's seeds):", ""]
            lines += _table(axes + ["method"] + m_columns, m_rows)
        shown_in_benchmark = set()
        if "benchmark" in sweep:
            shown_in_benchmark = {
                f["path"] for spec in sweep["benchmark"]["tasks"].values() for f in spec.get("figures", [])
            }
            lines += [
                "",
                "Its benchmark tables, one row group per sweep point, are in the Benchmark section.",
            ]
        for p in sweep["points"]:
            figures = [f for f in p["figures"] if f"{p['run']}/{f}" not in shown_in_benchmark]
            if figures:
                lines += ["", f"Figures of {p['label']}:", ""]
                lines += [f"![{p['label']}: {f}]({p['run']}/{f})" for f in figures[:FIGURES_PER_POINT]]
        lines.append("")
    return lines


def markdown_merged_benchmark(sweep: dict[str, Any], heading: str = "###") -> list[str]:
    """The merged benchmark tables of one swept notebook, with every point's picture rows."""
    return markdown_tables(sweep["benchmark"], heading=heading, figures_dir="")
