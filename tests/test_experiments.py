"""The experiment protocol: profile sizes in one table, one std rule, claims from per-seed values."""

import json
import math

import pytest
import torch

from fewshot_lib.experiments import Experiment, cpu_threads, seeds_for, sizes, summarize


def test_sizes_and_seeds_come_from_one_table():
    assert sizes("04_cdc", "lab") == {
        "steps": 200,
        "n_seeds": 3,
        "n_eval": 500,
        "n_curve_points": 6,
        "shipped_min_steps": 5000,
    }
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


def test_a_seed_that_did_not_record_a_metric_is_left_out_not_crashed_on():
    # notebook 09: the first MixDL showcase seed has no CPU time in its manifest, later seeds do
    res = Experiment(
        "t", {"a": lambda s: {"fid": 10.0 + s, "cpu": None if s == 0 else 5.0 * s}}, [0, 1, 2]
    ).run(show_progress=False)
    assert res.values("a", "cpu") == [5.0, 10.0] and res.summary("a", "cpu").n == 2
    assert res.as_dict()["summary"]["a"]["fid"]["n"] == 3


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


def _leaves(table, path=()):
    """(path, value) of every size, nested tables (07's ``live``, 08's ``label_seeds``) walked into."""
    for name, value in table.items():
        if isinstance(value, dict) and name != "model":
            yield from _leaves(value, path + (name,))
        else:
            yield path + (name,), value


def test_cut_short_caps_every_count_and_keeps_models_batches_and_thresholds(monkeypatch):
    from fewshot_lib.experiments import (
        CUT_SHORT_CAPS,
        CUT_SHORT_CAPS_BY_EXPERIMENT,
        CUT_SHORT_ENV,
        KEPT_WHEN_CUT_SHORT,
        PROFILE_SIZES,
    )

    full = {(e, p): sizes(e, p) for e in PROFILE_SIZES for p in ("smoke", "lab", "full")}
    monkeypatch.setenv(CUT_SHORT_ENV, "1")
    n_capped = 0
    for (experiment, profile), table in full.items():
        cut = sizes(experiment, profile)  # raises if a size is neither capped nor kept
        caps = {**CUT_SHORT_CAPS, **CUT_SHORT_CAPS_BY_EXPERIMENT.get(experiment, {})}
        cut_leaves = dict(_leaves(cut))
        assert set(cut_leaves) == {path for path, _ in _leaves(table)}, (experiment, profile)
        for path, value in _leaves(table):
            got, name = cut_leaves[path], path[-1]
            if name in KEPT_WHEN_CUT_SHORT or value is None:
                assert got == value, (experiment, profile, path)
            elif isinstance(value, int):
                all_of_them = value == 0 and name == "n_classes"  # 09: 0 = every unseen class
                assert got == (caps[name] if all_of_them else min(value, caps[name])), (experiment, path)
                n_capped += got < value
            else:  # 08's label seeds: ranges keep their start and lose their tail
                assert list(got) == list(value)[: caps[name]], (experiment, path)
    assert n_capped > 20  # the caps bite somewhere (full and lab are far above them)

    # full: counts down to a few, the architecture exactly the profile's
    from fewshot_lib.models.stylegan2 import SOURCE_MODEL_CONFIG

    g2 = sizes("02_stylegan2_training", "full")
    assert (g2["steps"], g2["sample_every"], g2["n_fid"], g2["proj_steps"]) == (2, 1, 128, 10)
    assert g2["model"] == SOURCE_MODEL_CONFIG and (g2["batch"], g2["r1_every"]) == (32, 16)
    assert sizes("05_mixdl", "full")["model"] == full["05_mixdl", "full"]["model"]
    assert sizes("07_lso", "full")["live"] == {"invert": 8, "lal": 3, "lsr": 3, "batch": 16}
    assert sizes("08_latent_explorer", "full")["label_seeds"] == {
        "seeds": range(4),
        "select_seeds": range(1000, 1002),
        "min_seeds": 3,
    }
    assert sizes("06_lofgan", "full")["shipped_min_steps"] == 10_000
    # one experiment's own cap (04's later seeds take another branch), the global one elsewhere
    assert seeds_for("04_cdc", "full") == [0, 1] and seeds_for("05_mixdl", "full") == [0]
    # an explicit override (a notebook parameter ≠ 0) still wins; the table itself is untouched
    assert sizes("04_cdc", "full", steps=40, n_eval=0)["steps"] == 40
    assert sizes("04_cdc", "full", n_eval=0)["n_eval"] == 32
    monkeypatch.setenv(CUT_SHORT_ENV, "0")
    assert {(e, p): sizes(e, p) for e, p in full} == full


def test_cut_short_is_off_unless_asked_and_refuses_sizes_it_cannot_classify(monkeypatch):
    from fewshot_lib.experiments import CUT_SHORT_ENV, cut_short, cut_short_sizes

    for value, on in (("", False), ("0", False), ("no", False), ("1", True), ("true", True), ("YES", True)):
        monkeypatch.setenv(CUT_SHORT_ENV, value)
        assert cut_short() is on, value
    monkeypatch.delenv(CUT_SHORT_ENV)
    assert not cut_short() and sizes("04_cdc", "full")["steps"] == 5000
    # zero means "all" for n_classes (09): cut short, the cap
    assert cut_short_sizes({"n_classes": 0, "n_seeds": 3}) == {"n_classes": 2, "n_seeds": 1}
    # a size nobody classified is refused with its path, nested or not: is it a count? decide in one place
    with pytest.raises(ValueError, match="'09_new.mystery' is neither capped"):
        cut_short_sizes({"steps": 10, "mystery": 5}, "09_new")
    with pytest.raises(ValueError, match="'live.warmup' is neither capped"):
        cut_short_sizes({"live": {"invert": 100, "warmup": 3}})
    with pytest.raises(ValueError, match="not a count"):
        cut_short_sizes({"steps": "many"})
    with pytest.raises(ValueError, match="flag"):
        cut_short_sizes({"steps": True})
