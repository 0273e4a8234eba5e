"""Every notebook's ``full`` profile runs as written, on a CPU, cut short.

The full profile is meant for a GPU (hours), so nothing else runs it; a cell that only works at the CPU
profiles' sizes — a threshold tuned to lab's sample count, a branch for ``profile != "full"``, a size read from
somewhere other than the one table — would stay hidden until a user with a GPU hit it. Here each notebook runs
with ``profile="full"`` and ``device="cpu"`` in cut-short mode (``FEWSHOT_CUT_SHORT=1``): every *count* of
``experiments.PROFILE_SIZES`` is capped (steps, seeds, evaluation sizes, …) while the models, batch sizes and
everything else stay at their full values, so every full-profile cell runs once, in seconds to a minute per
notebook. ``scripts/gpu_check.sh`` runs the same on a GPU.

One test per notebook, executed like ``fewshot run`` does (papermill, a fresh kernel in the notebook's folder),
into pytest's temporary folder: nothing is written under the repository or ``runs/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fewshot_lib.config import repo_root
from fewshot_lib.experiments import CUT_SHORT_ENV
from fewshot_lib.runner import declared_parameters, execute_one, find_notebooks

NOTEBOOKS = find_notebooks(repo_root() / "notebooks")

#: Notebooks whose full profile needs something only a GPU has (none: every full-profile code path has a CPU
#: path). A notebook listed here is reported as an expected failure with its reason, never silently skipped.
NEEDS_A_GPU: dict[str, str] = {}

#: What each method notebook leaves in its run folder for the report of a ``fewshot run``: figure PNGs (the
#: report's figures section) and the images it shows, ``samples.npz``.
FOR_THE_REPORT: dict[str, list[str]] = {
    "02_stylegan2_training": ["*.png"],
    **{nb: ["*.png", "samples.npz"] for nb in ("04_cdc", "05_mixdl", "06_lofgan", "07_lso", "09_benchmark")},
}


def test_every_notebook_takes_the_profile_and_device_this_test_injects():
    assert [nb.stem[:2] for nb in NOTEBOOKS][:10] == [f"{i:02d}" for i in range(10)]
    for nb in NOTEBOOKS:
        assert {"profile", "device", "run_dir"} <= declared_parameters(nb), nb.name


class FullProfileRun:
    """The full-profile run of one notebook. One class per notebook (below) rather than one parametrised test:
    ``make test`` hands out whole classes to its pytest-xdist workers (``--dist loadscope``), so the ten runs of
    up to a minute each spread over the workers instead of queueing on one."""

    notebook: Path

    @pytest.mark.notebooks
    def test_the_full_profile_runs_cut_short_on_cpu(self, tmp_path, monkeypatch):
        notebook = self.notebook
        # The kernel inherits this process's environment: cut-short mode, one thread, plain progress lines, and
        # FEWSHOT_RUNS pointing into tmp_path for anything that would otherwise default to runs/.
        monkeypatch.setenv(CUT_SHORT_ENV, "1")
        monkeypatch.setenv("FEWSHOT_PROFILE", "full")
        monkeypatch.setenv("FEWSHOT_PROGRESS", "plain")
        monkeypatch.setenv("FEWSHOT_RUNS", str(tmp_path / "runs"))
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "FEWSHOT_THREADS"):
            monkeypatch.setenv(var, "1")
        out = tmp_path / notebook.stem
        run = execute_one(notebook, out, {"profile": "full", "device": "cpu"}, timeout=600)
        assert run.status == "ok", f"{notebook.name} failed at the full profile (cut short): {run.error}"
        assert run.parameters["profile"] == "full" and run.parameters["device"] == "cpu"
        written = json.loads((out / "metrics.json").read_text())
        assert written["profile"] == "full", f"{notebook.name} wrote metrics.json for {written['profile']!r}"
        for pattern in FOR_THE_REPORT.get(notebook.stem, []):
            assert list(out.glob(pattern)), (
                f"{notebook.name} left no {pattern} in its run folder for the report"
            )


for _nb in NOTEBOOKS:  # TestFullProfile_00_data_and_setup, …
    _marks = (
        [pytest.mark.xfail(reason=NEEDS_A_GPU[_nb.stem], strict=False)] if _nb.stem in NEEDS_A_GPU else []
    )
    globals()[f"TestFullProfile_{_nb.stem}"] = type(
        f"TestFullProfile_{_nb.stem}", (FullProfileRun,), {"notebook": _nb, "pytestmark": _marks}
    )
