"""The training loop every script in scripts/ runs (fewshot_lib.sittings): chunks, budget, records, exports."""

from __future__ import annotations

import math

from fewshot_lib import sittings


class _CountingTrainer:
    """Stands in for GANTrainer / LoFGANTrainer: ``train(steps=...)`` advances to ``steps``, logging a loss."""

    def __init__(self, step: int = 0):
        self.step, self.history, self.calls = step, {"loss": []}, []

    def train(self, steps: int, **kwargs) -> None:
        self.calls.append((self.step, steps, kwargs))
        self.history["loss"] += [1.0] * (steps - self.step)
        self.step = steps


def test_chunks_stop_at_the_target_and_export_every_n_and_at_the_end(tmp_path):
    trainer, exports = _CountingTrainer(step=10), []
    sitting = sittings.Sitting(tmp_path, "python scripts/x.py", trainer.step, threads=1, note=None)
    sittings.train_in_sittings(
        trainer,
        sitting,
        stop=35,
        chunk=10,
        export=lambda: exports.append(trainer.step),
        export_every=20,
        last_export=10,
        train_kwargs=dict(show_progress=False),
    )
    assert [(a, b) for a, b, _ in trainer.calls] == [(10, 20), (20, 30), (30, 35)]
    assert trainer.calls[0][2] == {"show_progress": False}
    assert exports == [30, 35]  # 20 iterations after the last export, then the final step
    (entry,) = sittings.training_commands(tmp_path)  # one sitting, updated after every chunk
    assert entry["start_step"] == 10 and entry["end_step"] == 35 and entry["threads"] == 1
    assert "note" not in entry and entry["wall_s"] >= 0 and entry["cpu_s"] >= 0


def test_a_spent_budget_trains_nothing_and_a_run_never_exported_exports_once(tmp_path):
    trainer, exports = _CountingTrainer(step=5), []
    sitting = sittings.Sitting(tmp_path, "cmd", trainer.step, minutes=0)
    sittings.train_in_sittings(
        trainer, sitting, stop=100, chunk=10, export=lambda: exports.append(trainer.step), last_export=None
    )
    assert trainer.calls == [] and exports == [5]
    sitting = sittings.Sitting(tmp_path, "cmd", trainer.step, minutes=0)
    sittings.train_in_sittings(
        trainer, sitting, stop=100, chunk=10, export=lambda: exports.append(trainer.step), last_export=5
    )
    assert exports == [5]  # this step is exported already


def test_after_chunk_runs_each_chunk_and_ranks_other_than_0_write_nothing(tmp_path):
    trainer, seen = _CountingTrainer(), []
    sitting = sittings.Sitting(tmp_path / "run", "cmd", 0)
    sittings.train_in_sittings(
        trainer,
        sitting,
        stop=4,
        chunk=2,
        after_chunk=lambda: seen.append(trainer.step) or "fid=1",
        export=lambda: seen.append("export"),
        export_every=1,
        last_export=0,
        main_rank=False,
    )
    assert seen == [2, 4] and not (tmp_path / "run").exists()


def test_sittings_add_up_and_metric_history_keeps_one_entry_per_step(tmp_path):
    for started, wall, cpu in (("a", 10.0, 18.0), ("b", 5.5, 9.0)):
        sittings.record_command(tmp_path, {"command": "c", "started": started, "wall_s": wall, "cpu_s": cpu})
    sittings.record_command(tmp_path, {"command": "c", "started": "b", "wall_s": 6.5, "cpu_s": 11.0})
    assert sittings.training_cost(tmp_path) == {"wall_s": 16.5, "cpu_s": 29.0}
    sittings.record_metrics(tmp_path, 200, {"fid": 40.123456, "other": 1.0}, keys=("fid",))
    sittings.record_metrics(tmp_path, 100, {"fid": 50.0})
    history = sittings.record_metrics(tmp_path, 200, {"fid": 39.0})
    assert history == [{"step": 100, "fid": 50.0}, {"step": 200, "fid": 39.0}]
    assert sittings.metric_history(tmp_path) == history
    assert math.isinf(sittings.Sitting(tmp_path, "c", 0).deadline)
    sittings.Sitting(tmp_path, "c", 0).record(1)
    sittings.Sitting(tmp_path, "c", 1).record(
        2
    )  # the next sitting, started in the same second: both are kept
    assert [e.get("end_step") for e in sittings.training_commands(tmp_path)][-2:] == [1, 2]
