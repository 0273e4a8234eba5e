"""Notebook 09's library part (fewshot_lib.benchmark, fewshot_lib.benchmark_tables): what ships is found by name,
costs come from the manifests, rows keep every seed and never fill a missing method with zeros, the two tasks'
protocols run on small inputs. No shipped file is touched: fake exports live in a tmp FEWSHOT_DATA."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fewshot_lib import benchmark as B
from fewshot_lib import benchmark_tables as T
from fewshot_lib.experiments import ExperimentResult
from fewshot_lib.models.stylegan2 import count_parameters


def _fake_export(folder, name, sessions=None, **fields):
    (folder / f"{name}.pt").write_bytes(b"not a checkpoint")  # names() needs the file, never loads it
    manifest = {"name": name, "sha256": "0" * 64, "training_sessions": sessions or [], **fields}
    (folder / f"{name}.manifest.json").write_text(json.dumps(manifest))


def test_shipped_adaptations_are_found_by_their_export_names(tmp_path, monkeypatch):
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    _fake_export(ckpt, "cdc_fluent_3d_shots2")
    _fake_export(ckpt, "cdc_fluent_3d_shots2_d")  # the discriminator is not a row
    _fake_export(ckpt, "tgan_twemoji_shots0")  # another style
    _fake_export(ckpt, "freezed_fluent_3d_shotsX")  # not a seed
    monkeypatch.setenv("FEWSHOT_DATA", str(tmp_path))
    assert B.shipped_adaptations("fluent_3d") == {
        "tgan": {},
        "freezed": {},
        "cdc": {2: "cdc_fluent_3d_shots2"},
    }
    assert B.shipped_adaptations("twemoji")["tgan"] == {0: "tgan_twemoji_shots0"}


def test_shipped_adaptations_leave_out_runs_in_progress_and_other_shot_counts(tmp_path, monkeypatch):
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    _fake_export(ckpt, "cdc_fluent_3d_shots0", steps=5000, task={"n_shots": 10})
    _fake_export(ckpt, "cdc_fluent_3d_shots1", steps=2500, task={"n_shots": 10})  # still training
    _fake_export(ckpt, "cdc_fluent_3d_shots2", steps=5000, task={"n_shots": 5})
    monkeypatch.setenv("FEWSHOT_DATA", str(tmp_path))
    assert sorted(B.shipped_adaptations("fluent_3d")["cdc"]) == [0, 1, 2]
    assert sorted(B.shipped_adaptations("fluent_3d", min_steps=5000)["cdc"]) == [0, 2]
    assert B.shipped_adaptations("fluent_3d", min_steps=5000, n_shots=10)["cdc"] == {
        0: "cdc_fluent_3d_shots0"
    }
    assert sorted(B.shipped_adaptations("fluent_3d", n_shots=5)["cdc"]) == [2]


def test_training_cpu_minutes_add_every_sitting_or_say_unknown():
    assert B.training_cpu_minutes({"training_sessions": [{"cpu_s": 60.0}, {"cpu_s": 120.0}]}) == 3.0
    # one sitting without CPU seconds: a partial sum would understate the cost
    assert B.training_cpu_minutes({"training_sessions": [{"cpu_s": 60.0}, {"wall_s": 9.0}]}) is None
    assert B.training_cpu_minutes({}) is None


def test_shots_are_drawn_with_the_adaptation_scripts_rule(load_script):
    draw_shots = load_script("train_adaptation").draw_shots
    target = torch.arange(300.0).view(300, 1)
    for seed in (0, 1, 7):
        _, script_indices = draw_shots(target, 10, seed)
        assert B.draw_shot_indices(300, 10, seed) == script_indices
    assert B.draw_shot_indices(300, 10, 0) != B.draw_shot_indices(300, 10, 1)


def _result():
    per_seed = {
        "a": [{"seed": 0, "fid": 10.0, "near_copies": 0.5}, {"seed": 1, "fid": 14.0, "near_copies": 0.1}],
        "b": [{"seed": 0, "fid": 20.0}, {"seed": 1}],  # seed 1 of b has not shipped: an empty dict
        "c": [{"seed": 0, "fid": 5.0, "near_copies": 1.0}],
    }
    return ExperimentResult("t", per_seed)


def test_rows_keep_every_seed_and_mark_one_seed():
    res = _result()
    a = B.table_row(res, "a", ["fid", "near_copies", "kid"], "A")
    assert a["seeds"] == [0, 1] and a["fid"]["per_seed"] == [10.0, 14.0]
    assert a["fid"]["mean"] == 12.0 and math.isclose(a["fid"]["std"], math.sqrt(8.0))
    assert "kid" not in a  # not measured: absent, not 0
    b = B.table_row(res, "b", ["fid"], "B")
    assert b["seeds"] == [0] and b["fid"]["std"] is None
    assert T.cell_text(b["fid"], "fid") == "20 (one seed)"
    assert T.cell_text(a["fid"], "fid") == "12 ± 2.8"
    assert T.cell_text(None) == "—"


def test_a_method_not_shipped_has_a_row_without_numbers():
    row = B.placeholder_row("lso", "LSO", "issue #17")
    assert set(row) == set(T.ROW_KEYS) and row["status"] == "not shipped yet"
    lines = T.markdown_table([B.table_row(_result(), "a", ["fid"], "A"), row], ["fid"])
    assert lines[-1] == "| LSO | not shipped yet | — | — | issue #17 |"
    assert lines[0].startswith("| method | status | seeds | FID ↓")


def test_best_rows_follow_each_columns_direction_and_skip_references():
    res = _result()
    rows = [B.table_row(res, v, ["fid", "near_copies"], v) for v in ("a", "b")]
    rows.append(B.table_row(res, "c", ["fid", "near_copies"], "c", status="reference"))
    assert [r["method"] for r in T.best_rows(rows, "fid")] == ["a", "b"]  # lower FID first; c is a reference
    assert [r["method"] for r in T.best_rows(rows, "near_copies")] == ["a"]
    assert T.find_row(rows, "c")["status"] == "reference" and T.find_row(rows, "zz") is None


def test_markdown_tables_name_the_extractor_and_link_the_picture_row():
    rows = [B.table_row(_result(), "a", ["fid"], "A")]
    bench = {
        "extractor": "emoji-features-v1",
        "tasks": {"t1": {"title": "Task one", "protocol": "p", "columns": ["fid"], "figure": "t1.png"}},
        "tables": {"t1": rows},
    }
    text = "\n".join(T.markdown_tables(bench, figures_dir="09_benchmark"))
    assert "### Task one" in text and "](09_benchmark/t1.png)" in text and "emoji-features-v1" in text
    assert "t1.png" not in "\n".join(T.markdown_tables(bench))  # no figures folder, no picture link


@pytest.fixture(scope="module")
def two_classes(emoji):
    """Two real unseen-class-like classes (the emoji network knows their subcategories), small."""
    out = {}
    for sub in ("animal-bird", "food-fruit"):
        x = emoji.select(styles="noto", subcategories=sub).tensors()[:16]
        out[f"noto/{sub}"] = x
    return out


def test_unseen_class_task_floor_ceiling_and_pooled_metrics(two_classes):
    cond = {c: x[:10] for c, x in two_classes.items()}
    held = {c: x[10:] for c, x in two_classes.items()}
    task = B.UnseenClassTask.from_split(cond, held, torch.cat(list(two_classes.values())), k=3)
    assert task.ceiling["recognisability"] > task.floors["recognisability"]
    copy, fakes = task.copy_shots(seed=0, n_per_class=4)
    assert copy["near_copies"] == 1.0 and {"kid", "precision", "recall", "fid"} <= set(copy)
    assert {c: tuple(x.shape) for c, x in fakes.items()} == {c: (4, 3, 32, 32) for c in cond}
    real, _ = task.real_held_out(seed=0, n_per_class=4)
    assert (
        "fid" not in real and 0 <= real["class_consistency"] <= 1
    )  # the reference is not judged against itself
    blur, _ = task.evaluate(lambda shots: shots.mean(1), seed=1, n_per_class=4)
    assert blur["near_copies"] < 1.0 and "kid" not in blur  # pooled metrics only when asked


def test_shot_set_task_scores_every_column_of_a_tiny_generator():
    from fewshot_lib.models.stylegan2 import Generator

    torch.manual_seed(0)
    g = Generator(32, style_dim=16, n_mlp=1, channel_base=64, channel_max=8).eval()
    target = torch.rand(40, 3, 32, 32) * 2 - 1
    idx = B.draw_shot_indices(len(target), 5, 0)
    task = B.ShotSetTask("tiny", "noto", target[idx], target, 0, idx)
    values, images = task.evaluate(g, n=16, seed=0)
    costs = {"train_cpu_minutes", "parameters"}
    assert set(values) == set(B.SHOT_SET_COLUMNS) - costs and images.shape == (16, 3, 32, 32)
    again, _ = task.evaluate(g, n=16, seed=0)
    assert again["fid"] == values["fid"]  # seeded latents and noise: the same numbers
    g.requires_grad_(False)  # as a shipped export is loaded: the benchmark's count is still every weight
    assert count_parameters(g, trainable_only=False) == sum(p.numel() for p in g.parameters()) > 0
    assert count_parameters(g) == 0


def _ship_lso_tasks(folder, classes, done=None):
    """A samples file shaped like ``scripts/run_lso_tasks.py``'s: the first class is validation, LSO at s = 0.5
    gives real images of the class, at s = 1.0 uniform noise (so a magnitude choice that reads the judge picks
    0.5, one that prefers the most diverse s picks 1.0)."""
    import numpy as np

    from fewshot_lib.checkpoint import file_sha256
    from fewshot_lib.data.emoji import to_uint8

    g = torch.Generator().manual_seed(0)
    cols = {k: [] for k in ("images", "method", "magnitude", "task", "episode", "validation", "seed")}
    per_task = {k: [] for k in ("shots", "anchors", "task_class", "task_episode", "task_validation")}
    for j, (cls, x) in enumerate(classes.items()):
        val = j == 0
        for ep in range(2):
            shots = x[3 * ep : 3 * ep + 3]
            parts = [("lso", 0.5, x[8:14]), ("lso", 1.0, torch.rand(6, 3, 32, 32, generator=g) * 2 - 1)]
            parts += [("inversion_only", float("nan"), shots.mean(0, keepdim=True).expand(6, -1, -1, -1))]
            if not val:
                parts += [("inversion_finetune", float("nan"), x[10:16])]
            for method, s, imgs in parts:
                cols["images"].append(to_uint8(imgs))
                n = len(imgs)
                cols["method"] += [method] * n
                cols["magnitude"] += [s] * n
                cols["task"] += [cls] * n
                cols["episode"] += [ep] * n
                cols["validation"] += [val] * n
                cols["seed"] += [0] * n
            per_task["shots"].append(to_uint8(shots))
            per_task["anchors"].append(to_uint8(shots))
            per_task["task_class"].append(cls)
            per_task["task_episode"].append(ep)
            per_task["task_validation"].append(val)
    path = folder / "lso_samples_seed0.npz"
    arrays = {k: np.concatenate(v) if k == "images" else np.array(v) for k, v in cols.items()}
    np.savez_compressed(
        path,
        **arrays,
        **{k: np.array(v) if k.startswith("task") else np.stack(v) for k, v in per_task.items()},
    )
    n_tasks = len(per_task["task_class"])
    manifest = {
        "sha256": file_sha256(path),
        "seed": 0,
        "tasks_done": done or n_tasks,
        "tasks_planned": n_tasks,
        "source": "stylegan2_cond_seen32",
        "source_sha256": "0" * 64,  # not the shipped source's
    }
    (folder / "lso_samples_seed0.manifest.json").write_text(json.dumps(manifest))


def test_lso_tasks_give_every_method_the_shots_lso_was_run_on(tmp_path, two_classes, emoji):
    classes = {
        "noto/person": emoji.select(styles="noto", subcategories="person").tensors()[:16],
        **two_classes,
    }
    _ship_lso_tasks(tmp_path, classes)
    assert B.LSOTasks.shipped(1, folder=tmp_path) is None  # not shipped: no tasks, no error
    lso = B.LSOTasks.shipped(0, folder=tmp_path)
    assert lso.complete and lso.seed == 0 and lso.progress == "6 of 6 tasks"
    assert lso.stale  # made from another source export than the one shipped
    assert B.LSOTasks.shipped_seeds(tmp_path) == [0]
    assert [(c, e) for c, e, _ in lso.tasks(validation=True)] == [("noto/person", 0), ("noto/person", 1)]
    evaluation = lso.tasks(classes=["noto/animal-bird"], n_episodes=1)
    assert [(c, e) for c, e, _ in evaluation] == [("noto/animal-bird", 0)]
    bird = two_classes["noto/animal-bird"]
    assert (evaluation[0][2] - bird[:3]).abs().max() < 1 / 127  # the task's shots, back in [-1, 1]

    table = lso.validation_table()  # judged on the validation class only
    assert table[0.5]["class_consistency"] > table[1.0]["class_consistency"]
    assert B.choose_magnitude(table, bar=0.0) == 1.0  # both meet a zero bar: the most diverse s
    assert (
        B.choose_magnitude(
            {
                0.5: {"class_consistency": 0.9, "near_copies": 0.5},
                1.0: {"class_consistency": 0.1, "near_copies": 0.0},
            }
        )
        == 0.5
    )  # none meets it

    first_shot = lambda shots: shots[:, 0]  # noqa: E731  (a "generator" that returns its first shot)
    fakes, shots = lso.samples(0.5, per_task=4, generators={"first_shot": first_shot})
    assert set(fakes) == {"lso", "inversion_finetune", "inversion_only", "first_shot", "copy_shots"}
    assert set(shots) == set(two_classes)  # evaluation classes only
    for m in fakes:
        assert {c: tuple(x.shape) for c, x in fakes[m].items()} == {c: (8, 3, 32, 32) for c in two_classes}
    assert torch.equal(fakes["first_shot"]["noto/food-fruit"], shots["noto/food-fruit"][:, 0])
    assert torch.equal(
        fakes["lso"]["noto/animal-bird"][:4], lso.method_samples("lso", "noto/animal-bird", 0, 0.5)[:4]
    )
    with pytest.raises(KeyError, match="magnitude 0.7"):
        lso.method_samples("lso", "noto/animal-bird", 0, 0.7)

    _ship_lso_tasks(tmp_path, classes, done=4)  # a seed shipped in sittings: known, not complete
    assert not B.LSOTasks.shipped(0, folder=tmp_path).complete
