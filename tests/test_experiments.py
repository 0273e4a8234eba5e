"""The experiment protocol: profile sizes in one table, one std rule, claims from per-seed values."""

import json
import math

import pytest
import torch

from fewshot_lib.experiments import Experiment, cpu_threads, seeds_for, sizes, summarize


def test_sizes_and_seeds_come_from_one_table():
    assert sizes("04_cdc", "lab") == {"steps": 200, "n_seeds": 3, "n_eval": 500, "n_curve_points": 6}
    assert sizes("04_cdc", "lab", steps=0, n_eval=64)["n_eval"] == 64  # 0 means "the profile's value"
    assert sizes("04_cdc", "lab", steps=0)["steps"] == 200
    assert seeds_for("06_lofgan", "smoke", first=5) == [5, 6] and seeds_for(
        "04_cdc", "lab", 0, n_seeds=1
    ) == [0]
    with pytest.raises(ValueError, match="unknown experiment"):
        sizes("99_nothing", "lab")
    with pytest.raises(ValueError, match="no size"):
        sizes("04_cdc", "lab", stepz=3)
    with pytest.raises(ValueError, match="bogus"):
        sizes("04_cdc", "bogus")


def test_one_std_rule_and_one_seed_is_labelled_not_zero():
    s = summarize([1.0, 2.0, 4.0])
    assert s.mean == pytest.approx(7 / 3) and s.std == pytest.approx(torch.tensor([1.0, 2, 4]).std().item())
    one = summarize([3.0])
    assert one.std is None and one.label == "3 (one seed)"
    assert summarize([1.0, float("nan"), 3.0]).n == 2 and summarize([]).label == "no value"


def test_an_experiment_runs_every_variant_on_every_seed_and_builds_claims(tmp_path):
    calls = []

    def good(seed):
        calls.append(("good", seed))
        return {"score": 10.0 + seed, "fid": 50.0, "recognisability": 0.6}

    def worse(seed):
        calls.append(("worse", seed))
        return {"score": 1.0 + seed * 0.1, "fid": 80.0, "recognisability": 0.5}

    result = Experiment("demo", {"good": good, "worse": worse}, seeds=[0, 1, 2]).run(show_progress=False)
    assert calls == [("good", 0), ("worse", 0), ("good", 1), ("worse", 1), ("good", 2), ("worse", 2)]
    assert result.values("good", "score") == [10.0, 11.0, 12.0] and "good" in result.table()
    floors = {"fid": 300.0, "recognisability": 0.4}
    claim = result.claim("good beats worse", "score", "good", "worse", higher_is_better=True, floors=floors)
    assert claim["verdict"] == "holds" and claim["method_values"] == [10.0, 11.0, 12.0]
    assert claim["floor_check"]["method"] == {"fid": 50.0, "recognisability": pytest.approx(0.6)}
    noise = Experiment(
        "noise",
        {
            "a": lambda s: {"score": s, "recognisability": 0.1},
            "b": lambda s: {"score": -s, "recognisability": 0.1},
        },
        [0, 1],
    ).run(False)
    assert (
        noise.claim("a > b", "score", "a", "b", True, floors=floors)["verdict"]
        == "not measurable at this budget"
    )
    path = result.write(tmp_path, "demo", "smoke", [claim], extra=1)
    data = json.loads(path.read_text())
    assert data["metrics"]["summary"]["good"]["score"]["n"] == 3 and data["metrics"]["extra"] == 1
    with pytest.raises(TypeError, match="dict"):
        Experiment("bad", {"x": lambda s: 3.0}, [0]).run(False)
    with pytest.raises(ValueError, match="no seeds"):
        Experiment("none", {"x": good}, []).run(False)
    assert math.isnan(summarize([float("nan")]).mean)


def test_one_cpu_thread_policy(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("FEWSHOT_THREADS", raising=False)
        assert cpu_threads("cpu") == 1
        monkeypatch.setenv("FEWSHOT_THREADS", "2")
        assert cpu_threads("cpu") == 2 and cpu_threads("cpu", threads=1) == 1
    finally:
        torch.set_num_threads(before)


def test_the_table_holds_what_the_notebooks_ran_before_the_move():
    """03–05 took these sizes from their own by_profile calls; tests/test_notebook_pins.py checks the smoke ones
    end to end, this the lab/full ones the pins cannot reach (a full-profile 03 must fit set B: 792 images)."""
    from fewshot_lib.methods.mixdl import LAB_MODEL

    assert [sizes("03_evaluation", p)["n_fake"] for p in ("smoke", "lab", "full")] == [150, 700, 780]
    assert [sizes("05_mixdl", p)["steps"] for p in ("smoke", "lab", "full")] == [6, 300, 20_000]
    assert sizes("05_mixdl", "lab")["model"] == LAB_MODEL
    # lab's curve every steps // 6 = 33 iterations and full's every 500, as before
    assert [sizes("04_cdc", p)["steps"] // sizes("04_cdc", p)["n_curve_points"] for p in ("lab", "full")] == [
        33,
        500,
    ]


def test_sizes_hand_out_copies():
    mine = sizes("05_mixdl", "smoke")
    mine["model"]["style_dim"] = 999  # a notebook editing its model must not edit the table
    assert sizes("05_mixdl", "smoke")["model"]["style_dim"] == 16


def test_table_width():
    result = Experiment("w", {"a": lambda s: {"a_rather_long_metric_name": 1.0 + s}}, [0, 1]).run(False)
    lines = result.table(width=12).splitlines()
    assert (
        len(lines) == 2 and len(lines[0]) == 16 + 12 and "a_rather_l" in lines[0] and "1.5 ± 0.71" in lines[1]
    )


def test_table_columns_never_run_together():
    result = Experiment(
        "w",
        {
            "real": lambda s: {"kid": -0.0006896 + s * 1e-3, "lpips": 1.091 + s * 0.03},
            "copy": lambda s: {"kid": 0.9 + s, "lpips": 1.972e-17 + s * 1e-17},
        },
        [0, 1, 2],
    ).run(False)
    text = result.table(width=12)
    for line in text.splitlines()[1:]:
        cells = line[16:].split()
        assert cells.count("±") == 2 and len(cells) == 6, line  # every value separated from its neighbour


def test_lso_live_steps_live_in_the_table():
    """07's live task steps and its lab shrink (no shipped samples) are read from the table, not the notebook."""
    lab = sizes("07_lso", "lab")
    assert lab["live"] == {"invert": 100, "lal": 60, "lsr": 60, "batch": 8}
    assert lab["live_comparison"] == {
        "n_seeds": 1,
        "n_classes": 2,
        "n_episodes": 1,
        "invert": 30,
        "lal": 20,
        "lsr": 20,
    }
    assert all(sizes("07_lso", p)["live_comparison"] is None for p in ("smoke", "full"))
    assert [sizes("07_lso", p)["live"]["lsr"] for p in ("smoke", "lab", "full")] == [3, 60, 375]
    sizes("07_lso", "lab")["live"]["lal"] = 0  # a caller's copy: the table itself is unchanged
    assert sizes("07_lso", "lab")["live"]["lal"] == 60
