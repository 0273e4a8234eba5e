"""Batch runs: execute the notebooks with papermill, collect their ``metrics.json``, write a report.

One run lives in ``runs/<timestamp>/``::

    runs/20261123-201500/
        00_data_and_setup/            one folder per notebook (and per sweep point)
            00_data_and_setup.ipynb   the executed notebook, outputs included
            metrics.json              written by the notebook itself (``fewshot_lib.results``)
            *.png                     figures the notebook saved
        results.json                  everything collected, claims gathered from all notebooks
        report.md, report.html        the claims table, one table of notebooks, key figures

A notebook that fails is reported with its failing cell and error; the others still run, and the exit status
of ``fewshot run`` is non-zero. Parameters the notebook does not declare in its ``parameters`` cell are not
injected into it (papermill would only warn), so ``-p seed 1`` applies to every notebook that has a ``seed``.
"""
from __future__ import annotations

import html
import itertools
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .config import repo_root, resolve_profile
from .results import read_metrics

log = logging.getLogger(__name__)


@dataclass
class NotebookRun:
    """The outcome of executing one notebook with one parameter set."""

    notebook: str
    name: str
    parameters: dict[str, Any]
    status: str = "pending"          # "ok" | "failed"
    seconds: float = 0.0
    output: str = ""                 # executed notebook, relative to the run folder
    error: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    claims: list[dict] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)


def parse_value(text: str) -> Any:
    """Turn a command-line string into a Python literal when it looks like one (``"3"`` → 3)."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_sweep(specs: Iterable[str]) -> list[dict[str, Any]]:
    """``["lr=0.1,0.2", "seed=0,1"]`` → the cartesian product as a list of parameter dicts."""
    axes = []
    for spec in specs:
        if "=" not in spec:
            raise ValueError(f"--sweep expects NAME=v1,v2,…; got {spec!r}")
        name, values = spec.split("=", 1)
        parsed = [parse_value(v) for v in values.split(",") if v != ""]
        if not name or not parsed:
            raise ValueError(f"--sweep expects NAME=v1,v2,…; got {spec!r}")
        axes.append([(name.strip(), v) for v in parsed])
    return [dict(combo) for combo in itertools.product(*axes)] if axes else [{}]


def find_notebooks(folder: Path, only: str | None = None) -> list[Path]:
    """Numbered notebooks (``NN_*.ipynb``) in teaching order, optionally filtered by a glob or substring."""
    import fnmatch

    notebooks = sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if only:
        patterns = [p.strip() for p in only.split(",") if p.strip()]
        notebooks = [nb for nb in notebooks
                     if any(fnmatch.fnmatch(nb.name, p) or p in nb.name for p in patterns)]
    return notebooks


def declared_parameters(notebook: Path) -> set[str]:
    """Names assigned in the notebook's ``parameters`` cell."""
    import papermill as pm

    return set(pm.inspect_notebook(str(notebook)))


def _sweep_suffix(point: dict[str, Any]) -> str:
    return "".join(f"__{k}={v}" for k, v in point.items()).replace("/", "_")


def execute_one(notebook: Path, out_dir: Path, parameters: dict[str, Any], timeout: int | None = None
                ) -> NotebookRun:
    """Execute one notebook into ``out_dir`` and read back what it wrote."""
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / notebook.name
    declared = declared_parameters(notebook)
    skipped = sorted(set(parameters) - declared)
    params = {k: v for k, v in parameters.items() if k in declared}
    if "run_dir" in declared:
        params["run_dir"] = str(out_dir.resolve())
    if skipped:
        log.info("%s does not declare %s; not injected", notebook.name, skipped)
    run = NotebookRun(notebook=notebook.name, name=out_dir.name, parameters=params, output=notebook.name)
    start = time.time()
    try:
        pm.execute_notebook(str(notebook), str(output), parameters=params, kernel_name="python3",
                            cwd=str(notebook.parent), progress_bar=False, execution_timeout=timeout)
        run.status = "ok"
    except pm.PapermillExecutionError as err:
        run.status = "failed"
        run.error = {"cell": err.cell_index, "execution_count": err.exec_count, "ename": err.ename,
                     "evalue": err.evalue, "source": err.source[:500]}
    except Exception as err:  # kernel died, notebook unreadable, timeout …
        run.status = "failed"
        run.error = {"cell": None, "ename": type(err).__name__, "evalue": str(err)[:500], "source": ""}
    run.seconds = round(time.time() - start, 1)
    metrics_file = out_dir / "metrics.json"
    if metrics_file.is_file():
        try:
            data = read_metrics(metrics_file)
            run.metrics, run.claims = data["metrics"], data["claims"]
        except ValueError as err:
            run.status = "failed"
            run.error = run.error or {"cell": None, "ename": "BadMetrics", "evalue": str(err), "source": ""}
    elif run.status == "ok" and "run_dir" in declared:
        run.status = "failed"
        run.error = {"cell": None, "ename": "MissingMetrics",
                     "evalue": "the notebook finished but wrote no metrics.json to run_dir", "source": ""}
    run.figures = sorted(p.name for p in out_dir.glob("*.png"))
    return run


def run_notebooks(notebooks: Sequence[Path], out_root: Path, profile: str = "lab",
                  parameters: dict[str, Any] | None = None, sweep: Sequence[dict[str, Any]] = ({},),
                  timeout: int | None = None, echo=print) -> tuple[list[NotebookRun], Path]:
    """Execute every notebook for every sweep point; write ``results.json`` and the report.

    Returns the runs and the path of ``results.json``.
    """
    profile = resolve_profile(profile)
    out_root.mkdir(parents=True, exist_ok=True)
    os.environ["FEWSHOT_PROFILE"] = profile          # inherited by the kernels
    os.environ.setdefault("FEWSHOT_PROGRESS", "plain")
    jobs = [(nb, point) for nb in notebooks for point in sweep]
    runs = []
    for i, (nb, point) in enumerate(jobs, 1):
        name = nb.stem + _sweep_suffix(point)
        echo(f"[{i}/{len(jobs)}] {name} (profile={profile}) …", flush=True)
        params = {"profile": profile, **(parameters or {}), **point}
        run = execute_one(nb, out_root / name, params, timeout)
        runs.append(run)
        status = "ok" if run.status == "ok" else f"FAILED in cell {run.error.get('cell')}: " \
                                                  f"{run.error.get('ename')}: {run.error.get('evalue')}"
        echo(f"[{i}/{len(jobs)}] {name}: {status} ({run.seconds:.0f} s)", flush=True)
    results = collect_results(runs, profile)
    results_path = out_root / "results.json"
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    write_report(results, out_root)
    return runs, results_path


def collect_results(runs: Sequence[NotebookRun], profile: str) -> dict[str, Any]:
    """Gather every notebook's outcome and every claim into one JSON-able dict."""
    claims = [{"notebook": r.name, **c} for r in runs for c in r.claims]
    return {
        "profile": profile,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "ok": sum(r.status == "ok" for r in runs),
        "failed": sum(r.status != "ok" for r in runs),
        "notebooks": [asdict(r) for r in runs],
        "claims": claims,
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _verdict(claim: dict[str, Any]) -> str:
    """``yes`` / ``no``; a single seed has no noise estimate, so it only shows a direction."""
    verdict = "**yes**" if claim["holds"] else "no"
    return verdict + (" (1 seed: direction only)" if claim.get("seeds", 0) < 2 else "")


def _headline_metrics(metrics: dict[str, Any], limit: int = 4) -> str:
    """A few scalar metrics for the report table (nested dicts are skipped)."""
    scalars = [(k, v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return ", ".join(f"{k}={_fmt(v)}" for k, v in scalars[:limit])


def write_report(results: dict[str, Any], out_root: Path) -> tuple[Path, Path]:
    """``report.md`` and ``report.html``: the claims table first, then one table of notebooks, then figures."""
    claims, runs = results["claims"], results["notebooks"]
    md = [f"# fewshot-gen run ({results['profile']} profile, {results['created']})", "",
          f"{results['ok']} notebook run(s) succeeded, {results['failed']} failed.", "",
          "## Paper claims: reproduced or not", ""]
    if claims:
        md += ["| notebook | claim | metric (extractor) | method | baseline | seeds | holds |",
               "|---|---|---|---|---|---|---|"]
        for c in claims:
            md.append(f"| {c['notebook']} | {c['claim']} | {c['metric']} ({c.get('extractor', '?')}) | "
                      f"{c['method']}: {_fmt(c['method_mean'])} ± {_fmt(c['method_std'])} | "
                      f"{c['baseline']}: {_fmt(c['baseline_mean'])} ± {_fmt(c['baseline_std'])} | "
                      f"{c['seeds']} | {_verdict(c)} |")
    else:
        md.append("No notebook in this run tests a paper claim.")
    md += ["", "## Notebooks", "", "| notebook | status | time (s) | headline metrics |", "|---|---|---|---|"]
    for r in runs:
        status = "ok" if r["status"] == "ok" else (f"failed (cell {r['error'].get('cell')}: "
                                                   f"{r['error'].get('ename')}: {r['error'].get('evalue')})")
        md.append(f"| [{r['name']}]({r['name']}/{r['output']}) | {status.replace('|', '/')} | {r['seconds']:.0f} | "
                  f"{_headline_metrics(r['metrics'])} |")
    md += ["", "## Figures", ""]
    for r in runs:
        for fig in r["figures"][:4]:
            md.append(f"![{r['name']}: {fig}]({r['name']}/{fig})")
    md_path = out_root / "report.md"
    md_path.write_text("\n".join(md) + "\n")
    html_path = out_root / "report.html"
    html_path.write_text(_markdown_tables_to_html(md))
    return md_path, html_path


def _markdown_tables_to_html(lines: list[str]) -> str:
    """A tiny converter for the report's own Markdown (headings, paragraphs, tables, images)."""
    import re

    out = ["<!doctype html><html><head><meta charset='utf-8'><title>fewshot-gen report</title>",
           "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse}"
           "td,th{border:1px solid #ccc;padding:4px 8px}img{image-rendering:pixelated;max-width:48em;"
           "display:block;margin:1em 0}</style></head><body>"]
    in_table = False

    def inline(text: str) -> str:
        text = html.escape(text)
        text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
        return re.sub(r"\[(.+?)\]\((.+?)\)", r"<a href='\2'>\1</a>", text)

    for line in lines:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= {"-"}:
                continue
            if not in_table:
                out.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in cells) + "</tr>")
                in_table = True
            else:
                out.append("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if line.startswith("!["):
            alt, src = re.match(r"!\[(.*)\]\((.*)\)", line).groups()
            out.append(f"<figure><img src='{html.escape(src)}' alt='{html.escape(alt)}'>"
                       f"<figcaption>{html.escape(alt)}</figcaption></figure>")
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{inline(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    if in_table:
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def default_run_root() -> Path:
    return repo_root() / "runs" / time.strftime("%Y%m%d-%H%M%S")
