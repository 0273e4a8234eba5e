"""The ``fewshot`` command.

    fewshot run [--profile P] [--only PATTERN] [-p NAME VALUE]... [--sweep NAME=v1,v2] [--out DIR] [--jobs N]
    fewshot run ... --emit-slurm DIR        # write a SLURM array job instead of running
    fewshot merge RUN_DIR... [--out DIR]    # gather separately executed runs into one results.json + report
    fewshot info

``fewshot run`` executes the notebooks in order with papermill into a new ``runs/<timestamp>-<n>/`` and writes
``results.json`` plus a Markdown/HTML report (see :mod:`fewshot_lib.runner`). The exit status is 1 when any
notebook failed, 2 for a usage error (unknown profile, undeclared or ill-typed parameter, occupied --out),
reported in one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .config import ProfileError, environment_summary, repo_root, resolve_profile


def _usage_error(err: Exception) -> int:
    print(f"fewshot: error: {err}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fewshot", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute notebooks with papermill and write a report")
    run.add_argument("--profile", default="auto", help="smoke | lab | full | auto (default: auto)")
    run.add_argument("--only", default=None, help="glob or substring of notebook names, comma-separated")
    run.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="set a notebook parameter (repeatable)",
    )
    run.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="NAME=v1,v2",
        help="run every notebook once per value (repeatable: cartesian product); the report shows one "
        "table per swept notebook, a row per value",
    )
    run.add_argument("--notebooks", type=Path, default=repo_root() / "notebooks", help="notebook folder")
    run.add_argument("--out", type=Path, default=None, help="run folder (default runs/<timestamp>)")
    run.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds")
    run.add_argument(
        "--notebook-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="wall-clock limit per notebook (default by profile: smoke 1200, lab 7200, full 172800; "
        "0 = none); a notebook over it is stopped and reported, the others run",
    )
    run.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="notebook runs at once, each with its share of the CPU threads (default 1)",
    )
    run.add_argument(
        "--emit-slurm",
        type=Path,
        default=None,
        metavar="DIR",
        help="write DIR/run_array.sbatch (one SLURM array task per notebook × sweep value) instead "
        "of running; gather the results with `fewshot merge DIR/runs/*`",
    )
    merge = sub.add_parser(
        "merge", help="gather separately executed run folders into one results.json + report"
    )
    merge.add_argument("run_dirs", nargs="+", type=Path)
    merge.add_argument("--out", type=Path, default=None, help="merged run folder (default runs/<timestamp>)")
    sub.add_parser("info", help="print the environment, device and resolved profile")
    args = parser.parse_args(argv)

    try:
        profile = resolve_profile(args.profile if args.command == "run" else "auto")
    except ProfileError as err:  # one line, no traceback: a typo is not a crash
        return _usage_error(err)
    if args.command == "info":
        print(json.dumps({**environment_summary(), "profile": profile}, indent=2))
        return 0

    from .runner import ParameterError, emit_slurm, find_notebooks, merge_runs, parse_sweep, run_notebooks

    if args.command == "merge":
        try:
            path = merge_runs(args.run_dirs, args.out)
        except (FileNotFoundError, FileExistsError, ValueError) as err:
            return _usage_error(err)
        print(f"merged {len(args.run_dirs)} run(s): {path} and {path.parent / 'report.md'}")
        return 0

    notebooks = find_notebooks(args.notebooks, args.only)
    if not notebooks:
        print(f"No notebooks match {args.only!r} in {args.notebooks}", file=sys.stderr)
        return 2
    try:
        sweep = parse_sweep(args.sweep, typed=False)
    except ValueError as err:
        parser.error(str(err))
    # Values stay strings here: the runner types them by each notebook's declaration ("123" for a str stays "123").
    params = dict(args.parameter)
    if args.emit_slurm:
        try:
            script = emit_slurm(notebooks, args.emit_slurm, profile, params, sweep)
        except ParameterError as err:
            return _usage_error(err)
        print(
            f"wrote {script} ({len(notebooks) * len(sweep)} array task(s)); submit it with `sbatch {script}`, "
            f"then `fewshot merge {args.emit_slurm}/runs/*`"
        )
        return 0
    try:
        runs, results = run_notebooks(
            notebooks,
            args.out,
            profile,
            params,
            sweep,
            args.timeout,
            notebook_timeout=args.notebook_timeout,
            jobs=args.jobs,
        )
    except (ParameterError, FileExistsError) as err:
        return _usage_error(err)
    failed = [r for r in runs if r.status != "ok"]
    try:
        shown = results.parent.relative_to(Path.cwd())
    except ValueError:
        shown = results.parent
    print(
        f"\n{len(runs) - len(failed)}/{len(runs)} notebook runs succeeded. Results: {shown}/results.json, "
        f"report: {shown}/report.md"
    )
    for r in failed:
        print(
            f"  FAILED {r.name}: cell {r.error.get('cell')}: {r.error.get('ename')}: {r.error.get('evalue')}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
