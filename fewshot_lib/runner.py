"""Batch runs: execute the notebooks with papermill, collect their ``metrics.json``, write a report.

One run lives in its own new folder ``runs/<timestamp>-<n>/`` (created with ``exist_ok=False``, so two runs
started in the same second never share one; ``FEWSHOT_RUNS`` moves ``runs/``)::

    runs/20261123-201500-1/
        00_data_and_setup/            one folder per notebook (and per sweep point)
            00_data_and_setup.ipynb   the executed notebook, outputs included
            metrics.json              written by the notebook itself (``fewshot_lib.results``)
            *.png                     figures the notebook saved
        results.json                  everything collected, claims gathered from all notebooks
        report.md, report.html        the claims table, the benchmark tables (09), one table per swept notebook,
                                      one table of notebooks, key figures

A notebook that fails is reported with its failing cell and error; the others still run, and the exit status
of ``fewshot run`` is non-zero.

Parameters (``-p NAME VALUE``, ``--sweep``) are checked before anything runs:

* a name that no selected notebook declares in its ``parameters`` cell is refused (the error lists the declared
  names and suggests the closest); a declared one is injected only into the notebooks that declare it, so
  ``-p seed 1`` applies to every notebook that has a ``seed``;
* values are converted to the type of the notebook's literal (or annotation): ``-p k_shots abc`` is refused
  for an ``int``; ``-p target_style 123`` stays the string ``"123"``;
* parameters whose names end in ``_dir`` or ``_path`` are resolved against the caller's working directory
  (papermill runs a notebook in the notebook's folder);
* ``run_dir`` is the runner's: each notebook gets its own folder.

What was injected is recorded per notebook in ``results.json`` (``parameters``; ``not_declared`` lists the
requested names a notebook does not have; ``sweep_point`` the sweep values of that run), with a ``schema_version``.

**Sweeps.** A notebook run more than once (``--sweep target_style=fluent_3d,twemoji``, or separately executed
runs gathered by ``fewshot merge``) gets one aggregated table in the report: a row per sweep point, a column per
swept parameter and per headline metric, its per-method summary, its figures under it, and (notebook 09) its
benchmark tables merged with one row group per point. ``results.json`` keeps every point's metrics and claims
(each claim labelled with its point under ``"sweep"``) and holds the aggregated tables under ``"sweeps"``
(format: :mod:`fewshot_lib.sweep_tables`).

**Timeouts.** Each notebook has a wall-clock limit, :data:`NOTEBOOK_TIMEOUT_S` per profile (smoke 20 min,
lab 2 h, full 48 h; ``--notebook-timeout SECONDS`` overrides it, 0 disables it). A notebook that exceeds it is
stopped (its kernel shut down), reported as ``NotebookTimeout``, and the next notebook runs.

Kernels talk to the runner over local IPC sockets, not TCP: nothing listens on a port, and ipykernel has no
reason to warn "Kernel is running over TCP without encryption".
"""

from __future__ import annotations

import ast
import difflib
import html
import itertools
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .config import repo_root, resolve_profile, unique_dir
from .results import read_metrics

log = logging.getLogger(__name__)

# 2: requested parameters, not_declared, timeouts, schema_version itself; 3: sweeps, sweep_point, claims' sweep
RESULTS_SCHEMA_VERSION = 3
NOTEBOOK_TIMEOUT_S = {"smoke": 20 * 60, "lab": 2 * 3600, "full": 48 * 3600}
PATH_SUFFIXES = ("_dir", "_path")
RUNNER_OWNED = ("run_dir",)


class ParameterError(ValueError):
    """A ``-p`` / ``--sweep`` parameter that no selected notebook declares, or a value of the wrong type."""


@dataclass
class NotebookRun:
    """The outcome of executing one notebook with one parameter set."""

    notebook: str
    name: str
    parameters: dict[str, Any]
    status: str = "pending"  # "ok" | "failed"
    seconds: float = 0.0
    output: str = ""  # executed notebook, relative to the run folder
    error: dict[str, Any] | None = None
    not_declared: list[str] = field(default_factory=list)  # requested names this notebook does not have
    timeout_s: float | None = None  # its wall-clock limit
    metrics: dict[str, Any] = field(default_factory=dict)
    claims: list[dict] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    sweep_point: dict[str, Any] = field(default_factory=dict)  # this run's values of the --sweep parameters


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


def parse_sweep(specs: Iterable[str], typed: bool = True) -> list[dict[str, Any]]:
    """``["lr=0.1,0.2", "seed=0,1"]`` → the cartesian product as a list of parameter dicts.

    ``typed=False`` keeps the values as strings (the runner types them by each notebook's declaration).
    """
    axes = []
    for spec in specs:
        if "=" not in spec:
            raise ValueError(f"--sweep expects NAME=v1,v2,…; got {spec!r}")
        name, values = spec.split("=", 1)
        parsed = [parse_value(v) if typed else v for v in values.split(",") if v != ""]
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
        notebooks = [
            nb for nb in notebooks if any(fnmatch.fnmatch(nb.name, p) or p in nb.name for p in patterns)
        ]
    return notebooks


def parameter_specs(notebook: Path) -> dict[str, dict[str, Any]]:
    """``{name: {"inferred_type_name", "default", "help"}}`` of the notebook's ``parameters`` cell (papermill)."""
    import papermill as pm

    return pm.inspect_notebook(str(notebook))


def declared_parameters(notebook: Path) -> set[str]:
    """Names assigned in the notebook's ``parameters`` cell."""
    return set(parameter_specs(notebook))


_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def declared_type(spec: dict[str, Any]) -> type | None:
    """The type a parameter takes: its annotation, else the type of its literal default (``None`` = any)."""
    kind = _TYPES.get(str(spec.get("inferred_type_name", "")))
    if kind is not None:
        return kind
    try:
        default = ast.literal_eval(str(spec.get("default", "")))
    except (ValueError, SyntaxError):
        return None
    return type(default) if type(default) in _TYPES.values() else None


def coerce_value(name: str, value: Any, kind: type | None, where: str) -> Any:
    """``value`` (a command-line string or a Python value) as a ``kind``; :class:`ParameterError` if it is not one."""

    def bad() -> ParameterError:
        return ParameterError(
            f"Parameter {name}={value!r}: {where} declares {name} as {kind.__name__}, and "
            f"{value!r} is not one."
        )

    if kind is None:
        return parse_value(value) if isinstance(value, str) else value
    if kind is str:
        return value if isinstance(value, str) else str(value)
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes"):
            return True
        if text in ("false", "0", "no"):
            return False
        raise bad()
    if isinstance(value, bool):
        raise bad()
    if kind is int:
        if isinstance(value, int):
            return value
        try:
            return int(str(value).strip())
        except ValueError:
            raise bad() from None
    try:  # float
        result = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise bad() from None
    if not math.isfinite(result):
        raise bad()
    return result


def resolve_path_value(name: str, value: Any, base: Path) -> Any:
    """A non-empty relative ``*_dir`` / ``*_path`` value made absolute against ``base`` (the caller's folder)."""
    if (
        not name.endswith(PATH_SUFFIXES)
        or name in RUNNER_OWNED
        or not isinstance(value, str)
        or not value.strip()
    ):
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def check_parameters(specs: dict[Path, dict[str, dict[str, Any]]], requested: Iterable[str]) -> None:
    """Refuse names that no selected notebook declares (and runner-owned ones), with the closest suggestion."""
    declared = sorted({name for s in specs.values() for name in s})
    for name in requested:
        if name in RUNNER_OWNED:
            raise ParameterError(
                f"Parameter {name!r} is set by the runner (one folder per notebook); use --out "
                "to choose where the run goes."
            )
        if name not in declared:
            close = difflib.get_close_matches(name, declared, n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ParameterError(
                f"No selected notebook declares a parameter {name!r}.{hint} Declared: {', '.join(declared)}."
            )


def prepare_parameters(
    notebook: Path, specs: dict[str, dict[str, Any]], requested: dict[str, Any], base: Path | None = None
) -> tuple[dict[str, Any], list[str]]:
    """``(what to inject, requested names not declared)`` for one notebook: typed, paths made absolute."""
    base = Path.cwd() if base is None else base
    injected = {}
    for name, value in requested.items():
        if name in specs:
            value = coerce_value(name, value, declared_type(specs[name]), notebook.name)
            injected[name] = resolve_path_value(name, value, base)
    return injected, sorted(set(requested) - set(specs))


def _ipc_kernel_manager(folder: str) -> type:
    """A kernel manager class whose kernels listen on IPC sockets in ``folder`` (no TCP port, no warning)."""
    from jupyter_client.manager import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs: Any):
            kwargs.setdefault("transport", "ipc")
            kwargs.setdefault("ip", os.path.join(folder, "kernel"))
            super().__init__(**kwargs)

    return IPCKernelManager


def _sweep_suffix(point: dict[str, Any]) -> str:
    return "".join(f"__{k}={v}" for k, v in point.items()).replace("/", "_")


def execute_one(
    notebook: Path,
    out_dir: Path,
    parameters: dict[str, Any],
    timeout: int | None = None,
    notebook_timeout: float | None = None,
    transport: str = "ipc",
    base: Path | None = None,
) -> NotebookRun:
    """Execute one notebook into ``out_dir`` and read back what it wrote.

    ``parameters``: requested values (strings from the command line, or Python values); only those the notebook
    declares are injected, typed and with ``*_dir``/``*_path`` resolved against ``base`` (default: the current
    folder). ``timeout``: per cell; ``notebook_timeout``: wall clock for the whole notebook (``None`` = none).
    ``transport``: ``"ipc"`` (default) or ``"tcp"`` (jupyter's default, which makes ipykernel warn).
    """
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / notebook.name
    specs = parameter_specs(notebook)
    params, skipped = prepare_parameters(notebook, specs, parameters, base)
    if "run_dir" in specs:
        params["run_dir"] = str(out_dir.resolve())
    if skipped:
        log.info("%s does not declare %s; not injected", notebook.name, skipped)
    run = NotebookRun(
        notebook=notebook.name,
        name=out_dir.name,
        parameters=params,
        output=notebook.name,
        not_declared=skipped,
        timeout_s=notebook_timeout,
    )
    start = time.monotonic()
    clock: dict[str, float] = {}  # the budget starts with the first cell: kernel start-up has its own timeout

    def cell_timeout(cell: Any) -> int | None:
        """What is left of the notebook's budget (at least 1 s: nbclient reads 0 as "no limit")."""
        if notebook_timeout and "deadline" not in clock:
            clock["deadline"] = time.monotonic() + notebook_timeout
        left = math.ceil(clock["deadline"] - time.monotonic()) if "deadline" in clock else None
        limits = [t for t in (timeout, left) if t is not None]
        return max(1, min(limits)) if limits else None

    # interrupt_on_timeout: the cell gets a KeyboardInterrupt and the kernel shuts down cleanly (killing a busy
    # kernel outright makes it print zmq tracebacks); the budget check below tells a timeout from a real ^C.
    def over_budget() -> bool:
        return "deadline" in clock and time.monotonic() >= clock["deadline"] - 1

    def timeout_message() -> str:
        return (
            f"stopped after {time.monotonic() - start:.0f} s: the per-notebook limit is {notebook_timeout:.0f} s "
            "(--notebook-timeout to change it)"
        )

    engine: dict[str, Any] = {"timeout_func": cell_timeout, "interrupt_on_timeout": True}
    ipc_folder = tempfile.mkdtemp(prefix="fewshot-kernel-") if transport == "ipc" else None
    if ipc_folder:
        engine["kernel_manager_class"] = _ipc_kernel_manager(ipc_folder)
    try:
        # The kernel starts in the notebook's folder through nbclient's resources, not papermill's ``cwd=``:
        # that one chdirs the whole process, and two jobs on threads (``--jobs 2``) then restore each other's
        # folder, leaving the caller somewhere else (it broke every later relative path of a test session).
        engine["resources"] = {"metadata": {"path": str(notebook.parent.resolve())}}
        pm.execute_notebook(
            str(notebook.resolve()),
            str(output.resolve()),
            parameters=params,
            kernel_name="python3",
            progress_bar=False,
            **engine,
        )
        run.status = "ok"
    except pm.PapermillExecutionError as err:
        run.status = "failed"
        run.error = {
            "cell": err.cell_index,
            "execution_count": err.exec_count,
            "ename": err.ename,
            "evalue": err.evalue,
            "source": err.source[:500],
        }
        if err.ename == "KeyboardInterrupt" and over_budget():
            run.error.update(ename="NotebookTimeout", evalue=timeout_message())
    except Exception as err:  # kernel died, notebook unreadable, timeout …
        run.status = "failed"
        run.error = {"cell": None, "ename": type(err).__name__, "evalue": str(err)[:500], "source": ""}
        if isinstance(err, TimeoutError) and over_budget():
            run.error.update(ename="NotebookTimeout", evalue=timeout_message())
    finally:
        if ipc_folder:
            shutil.rmtree(ipc_folder, ignore_errors=True)
    run.seconds = round(time.monotonic() - start, 1)
    metrics_file = out_dir / "metrics.json"
    if metrics_file.is_file():
        try:
            data = read_metrics(metrics_file)
            run.metrics, run.claims = data["metrics"], data["claims"]
        except ValueError as err:
            run.status = "failed"
            run.error = run.error or {"cell": None, "ename": "BadMetrics", "evalue": str(err), "source": ""}
    elif run.status == "ok" and "run_dir" in specs:
        run.status = "failed"
        run.error = {
            "cell": None,
            "ename": "MissingMetrics",
            "evalue": "the notebook finished but wrote no metrics.json to run_dir",
            "source": "",
        }
    run.figures = sorted(p.name for p in out_dir.glob("*.png"))
    return run


def validate_parameters(
    notebooks: Sequence[Path],
    parameters: dict[str, Any] | None = None,
    sweep: Sequence[dict[str, Any]] = ({},),
    base: Path | None = None,
    profile: str = "lab",
) -> None:
    """Check names and types of every requested parameter against the selected notebooks, before any runs.

    Raises :class:`ParameterError` (one line) for an undeclared name, a value a notebook cannot take, or a seed
    sweep whose points would run the same seed twice.
    """
    specs = {nb: parameter_specs(nb) for nb in notebooks}
    requested = {**(parameters or {})}
    check_parameters(specs, list(requested) + [k for point in sweep for k in point])
    for point in sweep:
        for nb, spec in specs.items():
            prepare_parameters(nb, spec, {**requested, **point}, base)
    for nb, spec in specs.items():
        _refuse_overlapping_seeds(nb, spec, requested, sweep, profile)


def _refuse_overlapping_seeds(
    nb: Path, spec: dict, requested: dict[str, Any], sweep: Sequence[dict[str, Any]], profile: str
) -> None:
    """A method notebook runs seeds ``seed, seed + 1, …, seed + n_seeds − 1`` itself (the experiment protocol), so
    sweep points that differ only in their seeds and whose seed ranges overlap would count the same run twice in
    the aggregated table: refuse. Points that differ in anything else (``--sweep target_style=a,b``) are different
    experiments, and each rightly runs its own seeds 0, 1, …"""
    if not {"seed", "n_seeds"} <= set(spec) or len(sweep) < 2:
        return
    from .experiments import PROFILE_SIZES, seeds_for  # (torch: imported only when a sweep needs it)

    if nb.stem not in PROFILE_SIZES:
        return
    used: dict[tuple, dict[int, dict[str, Any]]] = {}  # the point's other parameters → seed → point
    for point in sweep:
        values = {**requested, **point}
        first = int(values.get("seed", spec["seed"].get("default", 0) or 0))
        seeds = seeds_for(nb.stem, profile, first, int(values.get("n_seeds", 0) or 0))
        experiment = tuple(sorted((k, repr(v)) for k, v in point.items() if k not in ("seed", "n_seeds")))
        seen = used.setdefault(experiment, {})
        for s in seeds:
            if s in seen and seen[s] != point:
                raise ParameterError(
                    f"{nb.name} runs {len(seeds)} seeds per job (seed, seed + 1, …): sweep points {seen[s]} and "
                    f"{point} both run seed {s}, which the aggregated table would count twice. Space the seeds "
                    f"by {len(seeds)} (e.g. --sweep seed={first - first % len(seeds)},"
                    f"{first - first % len(seeds) + len(seeds)}) or pass -p n_seeds 1."
                )
            seen[s] = point


def thread_budget(jobs: int, cpus: int | None = None) -> int:
    """CPU threads per notebook job when ``jobs`` run at once: the machine's cores shared out, at least 1."""
    cpus = cpus or os.cpu_count() or 1
    return max(1, cpus // max(1, jobs))


def run_notebooks(
    notebooks: Sequence[Path],
    out_root: Path | None = None,
    profile: str = "lab",
    parameters: dict[str, Any] | None = None,
    sweep: Sequence[dict[str, Any]] = ({},),
    timeout: int | None = None,
    echo=print,
    notebook_timeout: float | None = None,
    jobs: int = 1,
) -> tuple[list[NotebookRun], Path]:
    """Execute every notebook for every sweep point; write ``results.json`` and the report.

    ``out_root``: the run folder (``None``: a new unique ``runs/<stamp>-<n>``); one that already holds a
    ``results.json`` is refused rather than overwritten. ``notebook_timeout``: seconds per notebook
    (``None``: :data:`NOTEBOOK_TIMEOUT_S` of the profile; ``0``: no limit). ``jobs``: notebook runs executed at
    once (each its own kernel, with :func:`thread_budget` CPU threads; results keep the job order). Parameters
    are validated first (:func:`validate_parameters`). Returns the runs and the path of ``results.json``.
    """
    if jobs < 1:
        raise ParameterError(f"--jobs must be ≥ 1, got {jobs}")
    profile = resolve_profile(profile)
    base = Path.cwd()
    validate_parameters(notebooks, parameters, sweep, base, profile)
    if notebook_timeout is None:
        notebook_timeout = NOTEBOOK_TIMEOUT_S[profile]
    out_root = prepare_run_root(out_root)
    os.environ["FEWSHOT_PROFILE"] = profile  # inherited by the kernels
    os.environ.setdefault("FEWSHOT_PROGRESS", "plain")
    if jobs > 1:  # kernels inherit the environment: share the cores out instead of oversubscribing them
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "FEWSHOT_THREADS"):
            os.environ[var] = str(thread_budget(jobs))
    todo = [(nb, point) for nb in notebooks for point in sweep]

    def one(i: int, nb: Path, point: dict[str, Any]) -> NotebookRun:
        name = nb.stem + _sweep_suffix(point)
        echo(f"[{i}/{len(todo)}] {name} (profile={profile}) …", flush=True)
        params = {"profile": profile, **(parameters or {}), **point}
        run = execute_one(nb, out_root / name, params, timeout, notebook_timeout or None, base=base)
        run.sweep_point = dict(point)
        status = (
            "ok"
            if run.status == "ok"
            else f"FAILED in cell {run.error.get('cell')}: "
            f"{run.error.get('ename')}: {run.error.get('evalue')}"
        )
        echo(f"[{i}/{len(todo)}] {name}: {status} ({run.seconds:.0f} s)", flush=True)
        return run

    if jobs == 1:
        runs = [one(i, nb, point) for i, (nb, point) in enumerate(todo, 1)]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=jobs) as pool:  # each thread waits on its own kernel process
            futures = [pool.submit(one, i, nb, point) for i, (nb, point) in enumerate(todo, 1)]
            runs = [f.result() for f in futures]
    results = collect_results(
        runs, profile, requested=parameters, sweep=sweep, notebook_timeout=notebook_timeout or None
    )
    results_path = out_root / "results.json"
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    write_report(results, out_root)
    return runs, results_path


def emit_slurm(
    notebooks: Sequence[Path],
    out_dir: Path,
    profile: str = "full",
    parameters: dict[str, Any] | None = None,
    sweep: Sequence[dict[str, Any]] = ({},),
    cpus: int = 8,
    time_limit: str = "12:00:00",
    gpus: int = 1,
) -> Path:
    """Write a SLURM array job: one task per notebook × sweep point, each a ``fewshot run`` into
    ``out_dir/runs/<i>-<name>``; gather them afterwards with ``fewshot merge out_dir/runs/*``.

    Writes ``out_dir/jobs.txt`` (one command per line, task ``i`` runs line ``i + 1``) and
    ``out_dir/run_array.sbatch``; returns the latter. Parameters are validated here, before anything is queued.
    """
    import shlex

    profile = resolve_profile(profile)
    validate_parameters(notebooks, parameters, sweep, Path.cwd(), profile)
    out_dir = Path(out_dir).resolve()
    (out_dir / "logs").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (nb, point) in enumerate((nb, point) for nb in notebooks for point in sweep):
        cmd = [
            "fewshot",
            "run",
            "--profile",
            profile,
            "--notebooks",
            str(nb.parent.resolve()),
            "--only",
            nb.name,
            "--out",
            str(out_dir / "runs" / f"{i:03d}-{nb.stem}{_sweep_suffix(point)}"),
        ]
        for name, value in {**(parameters or {}), **point}.items():
            cmd += ["-p", str(name), str(value)]
        lines.append(shlex.join(cmd))
    (out_dir / "jobs.txt").write_text("\n".join(lines) + "\n")
    script = out_dir / "run_array.sbatch"
    script.write_text(f"""#!/bin/bash
# {len(lines)} notebook job(s) written by `fewshot run --emit-slurm`; submit with: sbatch {script}
# then gather the results: fewshot merge {out_dir}/runs/*
#SBATCH --job-name=fewshot-gen
#SBATCH --array=0-{len(lines) - 1}
#SBATCH --cpus-per-task={cpus}
#SBATCH --time={time_limit}
{f"#SBATCH --gres=gpu:{gpus}" if gpus else "# (no GPU requested)"}
#SBATCH --output={out_dir}/logs/%A_%a.out
set -euo pipefail
cd {shlex.quote(str(repo_root()))}
export OMP_NUM_THREADS="${{SLURM_CPUS_PER_TASK:-1}}" MKL_NUM_THREADS="${{SLURM_CPUS_PER_TASK:-1}}"
CMD=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(str(out_dir / "jobs.txt"))})
echo "task $SLURM_ARRAY_TASK_ID: $CMD"
eval "$CMD"
""")
    script.chmod(0o755)
    return script


def merge_runs(run_dirs: Sequence[Path], out_root: Path | None = None) -> Path:
    """Gather separately executed runs (``fewshot run`` folders, e.g. SLURM array tasks) into one run folder:
    each notebook's folder is copied in, ``results.json`` lists every notebook and claim, and the report is
    written. Returns the path of the merged ``results.json``."""
    folders = [Path(d) for d in run_dirs]
    loaded = []
    for d in folders:
        path = d / "results.json"
        if not path.is_file():
            raise FileNotFoundError(f"{d} holds no results.json: is it a finished `fewshot run` folder?")
        loaded.append((d, json.loads(path.read_text())))
    if not loaded:
        raise ValueError("nothing to merge: give one or more run folders")
    out_root = prepare_run_root(out_root)
    # A SLURM array task is a plain `fewshot run -p NAME VALUE`: its notebook folder has no sweep suffix, and its
    # point is in the run's requested parameters. A name two runs share gets that point as its suffix.
    names = [r["name"] for _, data in loaded for r in data["notebooks"]]
    notebooks, seen = [], set()
    for d, data in loaded:
        for r in data["notebooks"]:
            point = {**(data.get("requested_parameters") or {}), **(r.get("sweep_point") or {})}
            name = r["name"]
            if names.count(name) > 1 and not r.get("sweep_point"):
                name += _sweep_suffix(point)
            while name in seen:  # still the same name (the same notebook and parameters twice): keep both
                name += "+"
            seen.add(name)
            if (d / r["name"]).is_dir():
                shutil.copytree(d / r["name"], out_root / name)
            notebooks.append({**r, "name": name, "sweep_point": point, "merged_from": str(d)})
    profiles = sorted({data["profile"] for _, data in loaded})
    results = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "profile": profiles[0] if len(profiles) == 1 else "mixed: " + ", ".join(profiles),
        "merged_from": [str(d) for d in folders],
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "ok": sum(r["status"] == "ok" for r in notebooks),
        "failed": sum(r["status"] != "ok" for r in notebooks),
        "notebooks": notebooks,
        "claims": [{**c, "notebook": r["name"]} for r in notebooks for c in r.get("claims", [])],
    }
    _aggregate_sweeps(results)
    results_path = out_root / "results.json"
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    write_report(results, out_root)
    return results_path


def collect_results(
    runs: Sequence[NotebookRun],
    profile: str,
    requested: dict[str, Any] | None = None,
    sweep: Sequence[dict[str, Any]] = ({},),
    notebook_timeout: float | None = None,
) -> dict[str, Any]:
    """Gather every notebook's outcome and every claim into one JSON-able dict, with the aggregated table of each
    swept notebook (``"sweeps"``)."""
    claims = [{"notebook": r.name, **c} for r in runs for c in r.claims]
    results = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "profile": profile,
        "requested_parameters": dict(requested or {}),
        "sweep": [dict(p) for p in sweep if p],
        "notebook_timeout_s": notebook_timeout,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "ok": sum(r.status == "ok" for r in runs),
        "failed": sum(r.status != "ok" for r in runs),
        "notebooks": [asdict(r) for r in runs],
        "claims": claims,
    }
    return _aggregate_sweeps(results)


def _aggregate_sweeps(results: dict[str, Any]) -> dict[str, Any]:
    """Add ``results["sweeps"]`` (:func:`fewshot_lib.sweep_tables.aggregate_sweeps`) and label each claim of a
    swept notebook with its sweep point (``claim["sweep"]``); returns ``results``."""
    from .sweep_tables import aggregate_sweeps, point_labels

    labels = point_labels(results["notebooks"])
    for claim in results["claims"]:
        if claim["notebook"] in labels:
            claim["sweep"] = labels[claim["notebook"]]
    results["sweeps"] = aggregate_sweeps(results["notebooks"])
    return results


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _verdict(claim: dict[str, Any]) -> str:
    """The ledger's verdict (``holds`` / ``does not hold`` / ``inconclusive`` / ``not measurable at this
    budget``; older results carry only ``holds``); a single seed has no noise estimate, so it only shows a
    direction."""
    verdict = claim.get("verdict") or ("holds" if claim.get("holds") else "does not hold")
    verdict = f"**{verdict}**" if verdict == "holds" else verdict
    direction_only = claim.get("seeds", 0) < 2 and claim.get("verdict") != "not judged: one seed"
    return verdict + (" (1 seed: direction only)" if direction_only else "")


def _per_seed(values: Any) -> str:
    return "[" + ", ".join(_fmt(v) for v in values) + "]" if isinstance(values, list) else "?"


def _claim_source(claim: dict[str, Any]) -> str:
    """The claim's notebook run, with its sweep point when the run's name does not already spell it out (a merged
    run keeps the name its own run gave it)."""
    name, label = claim["notebook"], claim.get("sweep")
    if not label or all(piece in name for piece in label.split(", ")):
        return name
    return f"{name} ({label})"


def _claims_table(claims: list[dict[str, Any]]) -> list[str]:
    rows = [
        "| notebook | claim | metric (extractor) | method: mean ± std [per seed] | baseline: mean ± std "
        "[per seed] | seeds | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in claims:
        rows.append(
            f"| {_claim_source(c)} | {c['claim']} | {c['metric']} ({c.get('extractor', '?')}) | "
            f"{c['method']}: {_fmt(c['method_mean'])} ± {_fmt(c['method_std'])} "
            f"{_per_seed(c.get('method_values'))} | "
            f"{c['baseline']}: {_fmt(c['baseline_mean'])} ± {_fmt(c['baseline_std'])} "
            f"{_per_seed(c.get('baseline_values'))} | {c['seeds']} | {_verdict(c)} |"
        )
    return rows


def _headline_metrics(metrics: dict[str, Any], limit: int = 4) -> str:
    """A few scalar metrics for the report table (nested dicts are skipped)."""
    scalars = [(k, v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return ", ".join(f"{k}={_fmt(v)}" for k, v in scalars[:limit])


def _benchmark_section(runs: list[dict[str, Any]], sweeps: list[dict[str, Any]]) -> list[str]:
    """The benchmark tables of every notebook run that wrote ``metrics["benchmark"]`` (notebook 09), each task
    with its picture row; a swept notebook's runs (e.g. over the target style) as one merged table per task, a
    row group and a picture row per sweep point."""
    from .benchmark_tables import markdown_tables
    from .sweep_tables import markdown_merged_benchmark

    found = [r for r in runs if isinstance(r.get("metrics", {}).get("benchmark"), dict)]
    if not found:
        return []
    merged = {s["notebook"]: s for s in sweeps if "benchmark" in s}
    md, done = ["", "## Benchmark: every method on the same tasks", ""], set()
    for r in found:
        notebook = r.get("notebook") or r["name"]  # (sweep_tables groups by the same key)
        sweep = merged.get(notebook)
        if sweep is not None:
            if notebook not in done:
                done.add(notebook)
                md += [
                    f"`{notebook}` over {', '.join(sweep['parameters'])}, one row group per point:",
                    "",
                ]
                md += markdown_merged_benchmark(sweep, heading="###")
            continue
        if len(found) > 1:
            md += [f"Run `{r['name']}`:", ""]
        md += markdown_tables(r["metrics"]["benchmark"], heading="###", figures_dir=r["name"])
    return md


def write_report(results: dict[str, Any], out_root: Path) -> tuple[Path, Path]:
    """``report.md`` and ``report.html``: the claims table first, then the benchmark tables with their picture
    rows (when a notebook wrote them), one table per swept notebook with its points' figures, one table of
    notebooks, then the other runs' figures. Results written before sweeps were aggregated get them here."""
    from .sweep_tables import aggregate_sweeps, markdown_sweeps

    claims, runs = results["claims"], results["notebooks"]
    sweeps = results.get("sweeps")
    if sweeps is None:
        sweeps = aggregate_sweeps(runs)
    md = [
        f"# fewshot-gen run ({results['profile']} profile, {results['created']})",
        "",
        f"{results['ok']} notebook run(s) succeeded, {results['failed']} failed.",
        "",
        "## Paper claims: reproduced or not",
        "",
    ]
    paper = [c for c in claims if c.get("kind", "paper") == "paper"]
    sanity = [c for c in claims if c.get("kind") == "sanity"]
    if paper:
        md += [
            "A paper claim is judged only when both sides' samples beat the image floors (recognisability "
            "of the reference shrunk to 8 px, FID of noise); otherwise it is *not measurable at this "
            "budget*.",
            "",
        ] + _claims_table(paper)
    else:
        md.append("No notebook in this run tests a paper claim.")
    if sanity:
        md += ["", "## Metric sanity checks", ""] + _claims_table(sanity)
    md += _benchmark_section(runs, sweeps)
    if sweeps:
        md += ["", "## Sweeps: one table per notebook run with several parameter values", ""]
        md += markdown_sweeps(sweeps, heading="###")
    md += ["", "## Notebooks", "", "| notebook | status | time (s) | headline metrics |", "|---|---|---|---|"]
    for r in runs:
        status = (
            "ok"
            if r["status"] == "ok"
            else (
                f"failed (cell {r['error'].get('cell')}: "
                f"{r['error'].get('ename')}: {r['error'].get('evalue')})"
            )
        )
        md.append(
            f"| [{r['name']}]({r['name']}/{r['output']}) | {status.replace('|', '/')} | {r['seconds']:.0f} | "
            f"{_headline_metrics(r['metrics'])} |"
        )
    swept = {p["run"] for s in sweeps for p in s["points"]}  # their figures are under their sweep's table
    figures = [
        f"![{r['name']}: {fig}]({r['name']}/{fig})"
        for r in runs
        if r["name"] not in swept
        for fig in r["figures"][:4]
    ]
    if figures:
        md += ["", "## Figures", ""] + figures
    md_path = out_root / "report.md"
    md_path.write_text("\n".join(md) + "\n")
    html_path = out_root / "report.html"
    html_path.write_text(_markdown_tables_to_html(md))
    return md_path, html_path


def _markdown_tables_to_html(lines: list[str]) -> str:
    """A tiny converter for the report's own Markdown (headings, paragraphs, tables, images)."""
    import re

    out = [
        "<!doctype html><html><head><meta charset='utf-8'><title>fewshot-gen report</title>",
        "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px}img{image-rendering:pixelated;max-width:48em;"
        "display:block;margin:1em 0}</style></head><body>",
    ]
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
            out.append(
                f"<figure><img src='{html.escape(src)}' alt='{html.escape(alt)}'>"
                f"<figcaption>{html.escape(alt)}</figcaption></figure>"
            )
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{inline(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    if in_table:
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def runs_folder() -> Path:
    """Where run folders go: ``FEWSHOT_RUNS`` if set, else ``runs/`` in the repository."""
    return Path(os.environ.get("FEWSHOT_RUNS") or repo_root() / "runs")


def default_run_root() -> Path:
    """A new, empty run folder ``runs/<stamp>-<n>``, created atomically (never shared by two runs)."""
    return unique_dir(runs_folder(), time.strftime("%Y%m%d-%H%M%S"))


def prepare_run_root(out_root: Path | None) -> Path:
    """``out_root`` created (or a new unique folder when ``None``); refuses one holding a previous run."""
    if out_root is None:
        return default_run_root()
    out_root = Path(out_root)
    if (out_root / "results.json").exists():
        raise FileExistsError(
            f"{out_root} already holds a run (results.json); choose another --out or leave it "
            "out for a new runs/<stamp>-<n> folder."
        )
    out_root.mkdir(parents=True, exist_ok=True)
    return out_root
