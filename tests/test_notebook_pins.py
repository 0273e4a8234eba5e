"""Behaviour pinned across the move of notebooks 03–05 onto ``fewshot_lib.experiments``.

``tests/pins/notebook_smoke_metrics.json`` holds the per-seed raw metrics each notebook produced at the smoke
profile *before* the move (its own seed loop). Each test runs the notebook as ``fewshot run`` does and compares
the per-seed rows of its ``metrics.json``: the same seeds, the same metrics, the same numbers. Summaries are not
compared — the one std rule (sample std, "one seed") replaced the notebooks' own.

Everything here is seeded and runs on one CPU thread, so the numbers repeat to float rounding; the tolerance
(relative 1e-6) only absorbs the JSON round trip and summation order, not a change of method or data.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fewshot_lib.runner import execute_one

pytestmark = pytest.mark.notebooks

ROOT = Path(__file__).resolve().parent.parent
PINS = json.loads((ROOT / "tests" / "pins" / "notebook_smoke_metrics.json").read_text())
NOTEBOOKS = sorted(k for k in PINS if k != "about")
REL_TOL = 1e-6


def _same(got: float, want: float) -> bool:
    if isinstance(want, float) and math.isnan(want):
        return isinstance(got, float) and math.isnan(got)
    return math.isclose(float(got), float(want), rel_tol=REL_TOL, abs_tol=1e-9)


def test_pins_cover_the_moved_notebooks():
    assert NOTEBOOKS == ["03_evaluation", "04_cdc", "05_mixdl"]
    for name in NOTEBOOKS:
        rows = [r for rs in PINS[name]["per_seed"].values() for r in rs]
        assert rows and all("seed" in r and len(r) > 2 for r in rows), name


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_per_seed_metrics_match_the_pinned_run(name, tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_PROFILE", "smoke")
    monkeypatch.setenv("FEWSHOT_PROGRESS", "plain")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")      # the pins were recorded on one thread (cpu_threads' policy)
    monkeypatch.delenv("FEWSHOT_THREADS", raising=False)
    run = execute_one(ROOT / "notebooks" / f"{name}.ipynb", tmp_path / name, {"profile": "smoke"})
    assert run.status == "ok", run.error
    got, want = run.metrics["per_seed"], PINS[name]["per_seed"]
    assert list(got) == list(want), "variants differ"
    for variant, rows in want.items():
        assert [r["seed"] for r in got[variant]] == [r["seed"] for r in rows], variant
        for new, old in zip(got[variant], rows):
            missing = set(old) - set(new)
            assert not missing, f"{variant} seed {old['seed']}: no longer reports {sorted(missing)}"
            changed = {k: (new[k], v) for k, v in old.items() if not _same(new[k], v)}
            assert not changed, f"{variant} seed {old['seed']}: (now, pinned) {changed}"
