"""Long trainings in sittings: the one loop every training script in ``scripts/`` runs.

A shipped model is trained for hours on a 2-core machine, across several invocations of a script ("sittings"):
each resumes from its run folder, trains in chunks until a wall-clock budget or a target step runs out, writes
a checkpoint after every chunk and an export every so often. Every sitting is recorded in
``<run_dir>/commands.json`` — command, start and end step, wall-clock and process CPU seconds, threads — so an
export's manifest can say what the whole training cost, and ``<run_dir>/metric_history.json`` keeps the
metrics of every export.

    sitting = Sitting(run_dir, command, trainer.step, minutes=60, threads=1)
    train_in_sittings(trainer, sitting, stop=40_000, chunk=500, export_every=2000, export=do_export,
                      last_export=trainer.step)

A sitting killed mid-chunk loses at most that chunk: the checkpoint and ``commands.json`` of the chunk before
are on disk, and the next sitting resumes from them.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = [
    "Sitting",
    "metric_history",
    "record_command",
    "record_metrics",
    "start_script",
    "train_in_sittings",
    "training_commands",
    "training_cost",
]

log = logging.getLogger("fewshot_lib.sittings")


def warm_start_files(g_path: str | Path) -> tuple[Path, Path, dict]:
    """What ``--warm-start G.pt`` needs beside it — the discriminator ``<G>_d.pt`` and the manifest — as
    ``(g_path, d_path, manifest)``; a missing one is named (the training scripts export the three together)."""
    from .artifacts import manifest_path

    g_path = Path(g_path)
    d_path, g_manifest = g_path.with_name(f"{g_path.stem}_d.pt"), manifest_path(g_path)
    for path in (g_path, d_path, g_manifest):
        if not path.is_file():
            raise FileNotFoundError(
                f"--warm-start needs {path.name} beside {g_path.name} (the training scripts export G, D and "
                "the manifest together)"
            )
    return g_path, d_path, json.loads(g_manifest.read_text())


def start_script(script: str, args: argparse.Namespace, argv: list[str] | None) -> str:
    """Log to the console (and to ``args.log`` if given), use ``args.threads`` torch threads, and return the
    invocation as a command line for the manifests."""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if getattr(args, "log", None):
        handlers.append(logging.FileHandler(args.log))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", handlers=handlers)
    torch.set_num_threads(getattr(args, "threads", 1) or 1)
    return f"python scripts/{script} " + " ".join(argv if argv is not None else sys.argv[1:])


def training_commands(run_dir: str | Path) -> list[dict]:
    """The sittings recorded in ``run_dir/commands.json`` (oldest first)."""
    path = Path(run_dir) / "commands.json"
    return json.loads(path.read_text()) if path.is_file() else []


def record_command(run_dir: str | Path, entry: dict) -> None:
    """Append (or, for the same ``started`` stamp, update) one sitting in ``run_dir/commands.json``."""
    run_dir = Path(run_dir)
    entries = [e for e in training_commands(run_dir) if e.get("started") != entry["started"]]
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "commands.json").write_text(json.dumps(entries + [entry], indent=2) + "\n")


def training_cost(run_dir: str | Path) -> dict[str, float]:
    """Wall-clock and process CPU seconds of every recorded sitting together: ``{"wall_s", "cpu_s"}``."""
    commands = training_commands(run_dir)
    return {k: round(sum(e.get(k, 0.0) for e in commands), 1) for k in ("wall_s", "cpu_s")}


def metric_history(run_dir: str | Path) -> list[dict]:
    """The metrics of every export so far, ``[{"step", ...}]`` (``run_dir/metric_history.json``)."""
    path = Path(run_dir) / "metric_history.json"
    return json.loads(path.read_text()) if path.is_file() else []


def record_metrics(
    run_dir: str | Path, step: int, metrics: dict[str, Any], keys: tuple[str, ...] | None = None
) -> list[dict]:
    """Add (or replace) the entry of ``step`` in the metric history — only ``keys`` of ``metrics`` when given,
    numbers rounded to 4 decimals — and return the whole history, oldest first."""
    run_dir = Path(run_dir)
    chosen = {k: v for k, v in metrics.items() if keys is None or k in keys}
    entry = {"step": step, **{k: round(v, 4) if isinstance(v, float) else v for k, v in chosen.items()}}
    history = sorted(
        [e for e in metric_history(run_dir) if e["step"] != step] + [entry], key=lambda e: e["step"]
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metric_history.json").write_text(json.dumps(history, indent=1) + "\n")
    return history


class Sitting:
    """One invocation of a training script: what is recorded about it, and its wall-clock budget.

    Args:
        run_dir: the run folder whose ``commands.json`` lists the sittings.
        command: the command line (``start_script``'s return value).
        start_step: the trainer's step when the sitting began (``None``: a script that counts tasks, not steps).
        minutes: wall-clock budget; ``inf`` for none.
        **fields: more to record (``threads``, ``lr``, a warm-start ``note``, …); ``None`` values are left out.
    """

    def __init__(
        self,
        run_dir: str | Path,
        command: str,
        start_step: int | None,
        minutes: float = math.inf,
        **fields: Any,
    ):
        self.run_dir = Path(run_dir)
        started, taken, n = (
            time.strftime("%Y-%m-%dT%H:%M:%S"),
            {e.get("started") for e in training_commands(run_dir)},
            1,
        )
        while (
            started in taken
        ):  # the stamp identifies the entry: two sittings in one second keep theirs apart
            started, n = f"{started.split('.')[0]}.{n}", n + 1
        self.entry = {
            "command": command,
            "started": started,
            **({} if start_step is None else {"start_step": int(start_step)}),
            **{k: v for k, v in fields.items() if v is not None},
        }
        self._wall0, self._cpu0 = time.time(), time.process_time()
        self.deadline = self._wall0 + minutes * 60

    def elapsed(self) -> dict[str, float]:
        """This sitting's wall-clock and process CPU seconds so far (all threads): manifests report what a
        shipped model cost in CPU time, not only in elapsed time."""
        return {
            "wall_s": round(time.time() - self._wall0, 1),
            "cpu_s": round(time.process_time() - self._cpu0, 1),
        }

    def time_left(self) -> bool:
        return time.time() < self.deadline

    def record(self, end_step: int | None = None, **fields: Any) -> None:
        """Write (or update) this sitting's entry in ``commands.json``."""
        end = {} if end_step is None else {"end_step": int(end_step)}
        record_command(self.run_dir, {**self.entry, **end, **fields, **self.elapsed()})


def _loss_means(trainer: Any, last: int) -> str:
    """Mean of each loss over the last ``last`` iterations of ``trainer.history`` (``name=value ...``)."""
    means = {k: sum(v[-last:]) / len(v[-last:]) for k, v in getattr(trainer, "history", {}).items() if v}
    return "  ".join(f"{k}={v:.3f}" for k, v in means.items())


def train_in_sittings(
    trainer: Any,
    sitting: Sitting,
    *,
    stop: int,
    chunk: int,
    last_export: int | None,
    export: Callable[[], None] | None = None,
    export_every: int | None = None,
    after_chunk: Callable[[], str | None] | None = None,
    train_kwargs: dict[str, Any] | None = None,
    decide: Callable[[bool], bool] = bool,
    main_rank: bool = True,
) -> None:
    """Train ``trainer`` in chunks of ``chunk`` iterations until step ``stop`` or the sitting's budget.

    After each chunk: ``after_chunk()`` (a per-chunk evaluation; the text it returns joins the log line), the
    sitting's entry is recorded, and ``export()`` runs when ``export_every`` iterations have passed since
    ``last_export`` (``None``: nothing exported yet). At the end ``export()`` runs unless this step is already
    exported. ``trainer`` has ``.step``, ``.train(steps=..., **train_kwargs)`` (which writes its checkpoint)
    and optionally ``.history`` (losses, logged as chunk means). Under ``torchrun``, ``decide`` lets rank 0 make
    the time decision for all ranks (``distributed.rank0_decides``) and only ``main_rank`` records and exports.
    """
    while trainer.step < stop and decide(sitting.time_left()):
        t0, s0 = time.time(), trainer.step
        trainer.train(steps=min(stop, trainer.step + chunk), **(train_kwargs or {}))
        extra = after_chunk() if after_chunk is not None else None
        log.info(
            "step %d  %.3f s/it  %s%s",
            trainer.step,
            (time.time() - t0) / max(1, trainer.step - s0),
            _loss_means(trainer, trainer.step - s0),
            f"  {extra}" if extra else "",
        )
        if main_rank:
            sitting.record(trainer.step)
        if (
            export is not None
            and export_every
            and (last_export is None or trainer.step - last_export >= export_every)
        ):
            if main_rank:  # the other ranks wait at the next chunk's start (FEWSHOT_DIST_TIMEOUT)
                export()
            last_export = trainer.step
    if main_rank:
        sitting.record(trainer.step)
        if export is not None and trainer.step != last_export:
            export()
