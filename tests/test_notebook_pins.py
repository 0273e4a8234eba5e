"""Behaviour pinned across the move of notebooks 03–05 onto ``fewshot_lib.experiments``.

``tests/pins/notebook_smoke_metrics.json`` holds the per-seed raw metrics notebook 05 produced at the smoke
profile *before* the move (its own seed loop); 03's and 04's pins did their job through the move and were retired
to keep ``make test`` under 10 minutes (git history holds them), 05's stays as the guard of the protocol. The test
runs the notebook at smoke — its cells up to the one that runs the experiment, which is where every pinned number
comes from (the later sections are figures, the ledger and metrics.json, checked by the nbval run of the notebook
and tests/test_experiments.py) — and compares
``result.per_seed``: the same variants, seeds and metrics, the same numbers. Summaries are not compared: the one std
rule (sample std, "one seed") replaced the notebooks' own.

Everything here is seeded and runs on one CPU thread, so the numbers repeat to float rounding; the tolerance
(relative 1e-6) only absorbs the JSON round trip, not a change of method or data. Cost at smoke on a 2-core machine
shared with two trainings: 05 ≈ 60 s.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import nbformat
from nbclient import NotebookClient

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
    assert NOTEBOOKS == ["05_mixdl"]
    for name in NOTEBOOKS:
        rows = [r for rs in PINS[name]["per_seed"].values() for r in rs]
        assert rows and all("seed" in r and len(r) > 2 for r in rows), name


def run_until_experiment(path: Path, run_dir: Path) -> dict:
    """Execute ``path`` at smoke (kernel in the notebook's folder, as the runner and nbval do) up to and including
    the cell that runs its ``Experiment``; return ``result.per_seed`` read back from the kernel as JSON."""
    nb = nbformat.read(path, as_version=4)
    params = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    stop = next(
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and "Experiment(" in c.source and ").run(" in c.source
    )
    override = nbformat.v4.new_code_cell(f'profile = "smoke"\nrun_dir = {str(run_dir)!r}')
    dump = nbformat.v4.new_code_cell(
        "import json as _json\nprint(_json.dumps(result.per_seed, default=float))"
    )
    nb.cells = nb.cells[: params + 1] + [override] + nb.cells[params + 1 : stop + 1] + [dump]
    NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("name") == "stdout")
    return json.loads(text)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_per_seed_metrics_match_the_pinned_run(name, tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_PROFILE", "smoke")
    monkeypatch.setenv("FEWSHOT_PROGRESS", "plain")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the pins were recorded on one thread (cpu_threads' policy)
    monkeypatch.delenv("FEWSHOT_THREADS", raising=False)
    got, want = run_until_experiment(ROOT / "notebooks" / f"{name}.ipynb", tmp_path), PINS[name]["per_seed"]
    assert list(got) == list(want), "variants differ"
    for variant, rows in want.items():
        assert [r["seed"] for r in got[variant]] == [r["seed"] for r in rows], variant
        for new, old in zip(got[variant], rows):
            missing = set(old) - set(new)
            assert not missing, f"{variant} seed {old['seed']}: no longer reports {sorted(missing)}"
            changed = {k: (new[k], v) for k, v in old.items() if not _same(new[k], v)}
            assert not changed, f"{variant} seed {old['seed']}: (now, pinned) {changed}"
