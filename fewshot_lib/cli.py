"""The ``fewshot`` command.

    fewshot run [--profile P] [--only PATTERN] [-p NAME VALUE]... [--sweep NAME=v1,v2] [--out DIR]
    fewshot info

``fewshot run`` executes the notebooks in order with papermill into ``runs/<timestamp>/`` and writes
``results.json`` plus a Markdown/HTML report (see :mod:`fewshot_lib.runner`). The exit status is 1 when any
notebook failed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .config import environment_summary, repo_root, resolve_profile


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fewshot", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute notebooks with papermill and write a report")
    run.add_argument("--profile", default="auto", help="smoke | lab | full | auto (default: auto)")
    run.add_argument("--only", default=None, help="glob or substring of notebook names, comma-separated")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="set a notebook parameter (repeatable)")
    run.add_argument("--sweep", action="append", default=[], metavar="NAME=v1,v2",
                     help="run every notebook once per value (repeatable: cartesian product)")
    run.add_argument("--notebooks", type=Path, default=repo_root() / "notebooks", help="notebook folder")
    run.add_argument("--out", type=Path, default=None, help="run folder (default runs/<timestamp>)")
    run.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds")
    sub.add_parser("info", help="print the environment, device and resolved profile")
    args = parser.parse_args(argv)

    if args.command == "info":
        print(json.dumps({**environment_summary(), "profile": resolve_profile("auto")}, indent=2))
        return 0

    from .runner import default_run_root, find_notebooks, parse_sweep, parse_value, run_notebooks

    notebooks = find_notebooks(args.notebooks, args.only)
    if not notebooks:
        print(f"No notebooks match {args.only!r} in {args.notebooks}", file=sys.stderr)
        return 2
    try:
        sweep = parse_sweep(args.sweep)
    except ValueError as err:
        parser.error(str(err))
    params = {name: parse_value(value) for name, value in args.parameter}
    out = args.out or default_run_root()
    runs, results = run_notebooks(notebooks, out, resolve_profile(args.profile), params, sweep, args.timeout)
    failed = [r for r in runs if r.status != "ok"]
    try:
        shown = results.parent.relative_to(Path.cwd())
    except ValueError:
        shown = results.parent
    print(f"\n{len(runs) - len(failed)}/{len(runs)} notebook runs succeeded. Results: {shown}/results.json, "
          f"report: {shown}/report.md")
    for r in failed:
        print(f"  FAILED {r.name}: cell {r.error.get('cell')}: {r.error.get('ename')}: {r.error.get('evalue')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
