"""The long-training scripts end to end at toy sizes: export with a manifest of sittings, exact resume from the
run folder, warm start from the shipped export on a "new machine" (no run folder)."""

import functools
import json

import numpy as np
import pytest
import torch

from fewshot_lib import artifacts
from fewshot_lib.data.emoji import load_emoji


@pytest.fixture
def small_lofgan(monkeypatch, load_script):
    script = load_script("train_lofgan")
    monkeypatch.setattr(
        script,
        "LAB_MODEL",
        dict(size=32, feature_size=8, nf=4, nf_d=4, max_nf_d=16, k=3, batch=2, gp_every=2),
    )
    monkeypatch.setattr(script, "N_PER_CLASS", 3)
    # every sitting of a test measures the same real manifold: compute it once (a few seconds per sitting)
    measure = script.real_manifold
    features = functools.cache(lambda: measure(script.load_emoji(size=32), script.get_extractor("emoji")))
    monkeypatch.setattr(script, "real_manifold", lambda data, ext: features())
    return script


def test_train_lofgan_resumes_exactly_and_warm_starts_from_its_export(tmp_path, small_lofgan):
    run, out = tmp_path / "run", tmp_path / "export" / "lofgan.pt"
    base = ["--steps", "6", "--chunk", "2", "--export-every", "100", "--run-dir", str(run), "--out", str(out)]
    small_lofgan.main(base + ["--until", "4"])  # a first sitting: 4 of the 6 steps
    first = json.loads(out.with_name("lofgan.manifest.json").read_text())
    assert first["steps"] == 4 and first["metric_history"][-1]["step"] == 4
    assert {"class_consistency", "near_copies", "recognisability", "lpips_diversity", "fid"} <= set(
        first["metrics"]
    )
    small_lofgan.main(base)  # a second sitting resumes from the run folder
    manifest = json.loads(out.with_name("lofgan.manifest.json").read_text())
    sittings = manifest["training_sessions"]
    assert manifest["steps"] == 6 and [s["start_step"] for s in sittings] == [0, 4]
    assert all(s["cpu_s"] >= 0 and s["threads"] == 1 for s in sittings) and manifest["sha256"]
    straight = tmp_path / "straight"
    small_lofgan.main(
        [
            "--steps",
            "6",
            "--chunk",
            "2",
            "--export-every",
            "100",
            "--run-dir",
            str(straight),
            "--out",
            str(tmp_path / "s" / "lofgan.pt"),
        ]
    )
    a = torch.load(run / "checkpoint.pt", weights_only=True)["g"]
    b = torch.load(straight / "checkpoint.pt", weights_only=True)["g"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # 4 + 2 steps = 6 steps in one go
    # A new machine: no run folder, only the fp16 export.
    fresh = tmp_path / "fresh"
    small_lofgan.main(
        [
            "--steps",
            "8",
            "--chunk",
            "2",
            "--export-every",
            "100",
            "--run-dir",
            str(fresh),
            "--out",
            str(tmp_path / "w" / "lofgan.pt"),
            "--warm-start",
            str(out),
        ]
    )
    warm = json.loads((tmp_path / "w" / "lofgan.manifest.json").read_text())
    assert (
        warm["steps"] == 8
        and len(warm["training_sessions"]) == 3
        and "warm start" in warm["training_sessions"][-1]["note"]
    )
    with pytest.raises(FileNotFoundError, match="_d.pt"):
        out.with_name("lofgan_d.pt").unlink()
        small_lofgan.main(
            ["--run-dir", str(tmp_path / "x"), "--out", str(tmp_path / "x.pt"), "--warm-start", str(out)]
        )


def test_train_adaptation_draws_different_shots_per_seed_and_resumes(tmp_path, monkeypatch, load_script):
    script = load_script("train_adaptation")
    target = torch.arange(50).float().view(50, 1, 1, 1).expand(50, 3, 2, 2)
    s0, i0 = script.draw_shots(target, 10, 0)
    s1, i1 = script.draw_shots(target, 10, 1)
    assert i0 != i1 and i0 == sorted(i0) and script.draw_shots(target, 10, 0)[1] == i0
    assert artifacts.adaptation_name("cdc", "fluent_3d", 2) == "cdc_fluent_3d_shots2"
    run, out = tmp_path / "run", tmp_path / "cdc.pt"
    common = [
        "--method",
        "tgan",
        "--eval-every",
        "2",
        "--n-eval",
        "16",
        "--run-dir",
        str(run),
        "--out",
        str(out),
    ]
    script.main(common + ["--steps", "2"])
    script.main(common + ["--steps", "4"])
    manifest = json.loads(out.with_name("cdc.manifest.json").read_text())
    assert manifest["steps"] == 4 and [e["step"] for e in manifest["metric_history"]] == [0, 2, 4]
    assert {"fid", "style_share", "correspondence", "recognisability"} <= set(manifest["metrics"])
    fluent_3d = torch.zeros(len(load_emoji(styles=["fluent_3d"])), 1)
    assert manifest["task"]["shot_indices"] == script.draw_shots(fluent_3d, 10, 0)[1]
    assert len(manifest["training_sessions"]) == 2 and out.with_name("cdc_d.pt").is_file()
    assert "cdc_anchors" not in manifest
    # CDC's export also records its anchor latents (an explorer draws from the regions CDC trained)
    cdc_run, cdc_out = tmp_path / "cdc_run", tmp_path / "cdc_real.pt"
    script.main(
        ["--method", "cdc", "--steps", "1", "--eval-every", "1", "--n-eval", "16"]
        + ["--run-dir", str(cdc_run), "--out", str(cdc_out)]
    )
    from fewshot_lib.explore import read_anchors

    cdc_manifest = json.loads(cdc_out.with_name("cdc_real.manifest.json").read_text())
    saved = torch.load(cdc_run / "checkpoint.pt", weights_only=True)["hook"]["anchors"]  # [10, z_dim]
    assert cdc_manifest["cdc_anchor_sigma"] == 0.1 and torch.allclose(
        torch.tensor(cdc_manifest["cdc_anchors"]), saved
    )
    assert torch.allclose(read_anchors(cdc_out), saved)  # the exported generator carries them too


def test_conditional_source_starts_its_synthesis_from_the_unconditional_model(tmp_path, load_script):
    script = load_script("train_conditional_source")
    names, images, labels = script.seen_data()
    assert len(names) == int(labels.max()) + 1 and len(images) == len(labels)
    assert not {n.rsplit("/", 1)[-1] for n in names} & {"animal-bird", "person"}  # unseen classes stay out
    from fewshot_lib.models.stylegan2 import SOURCE_MODEL_CONFIG, Discriminator, Generator
    from fewshot_lib.models.stylegan2_io import load_generator
    from fewshot_lib.config import data_dir
    from fewshot_lib.train import GANTrainer, TrainConfig

    G = Generator(**SOURCE_MODEL_CONFIG, c_dim=len(names))
    D = Discriminator(
        32,
        channel_base=SOURCE_MODEL_CONFIG["channel_base"],
        channel_max=SOURCE_MODEL_CONFIG["channel_max"],
        c_dim=len(names),
    )
    trainer = GANTrainer(G, D, images, TrainConfig(steps=1, batch=2), labels=labels)
    note = script.init_from_unconditional(trainer, data_dir() / "checkpoints" / "stylegan2_noto32.pt")
    source = load_generator(data_dir() / "checkpoints" / "stylegan2_noto32.pt")
    assert "mapping and projection new" in note
    assert torch.equal(trainer.G.convs[0].conv.weight, source.convs[0].conv.weight)  # synthesis copied
    assert trainer.G.style[0].weight.shape[1] == 2 * SOURCE_MODEL_CONFIG["style_dim"]  # conditional mapping


def test_conditional_source_class_balanced_option_draws_classes_evenly_and_resumes(
    tmp_path, monkeypatch, load_script
):
    script = load_script("train_conditional_source")
    names, images, labels = script.seen_data()
    sizes = torch.bincount(labels)
    assert sizes.min() <= 10 and sizes.max() >= 200  # why the option exists: classes of 10 to 259 images

    def class_mass(trainer):  # each class's probability of being drawn
        w = trainer.image_weights
        return torch.zeros(len(names)).index_add_(0, labels, w / w.sum())

    balanced = script.make_trainer(
        script.parse_args(["--class-balanced"]), len(names), images, labels, tmp_path
    )
    assert torch.allclose(class_mass(balanced), torch.full((len(names),), 1 / len(names)))
    assert (
        script.make_trainer(script.parse_args([]), len(names), images, labels, tmp_path).image_weights is None
    )

    # two sittings in one run folder: the second resumes the first's checkpoint with the option switched on,
    # and each sitting records how it sampled (export, which evaluates for minutes, is stubbed out)
    exported = []
    monkeypatch.setattr(script, "export", lambda trainer, *a, **k: exported.append(trainer.step))
    run = ["--run-dir", str(tmp_path / "run"), "--init-from", "", "--chunk", "1"]
    script.main(run + ["--steps", "1"])
    script.main(run + ["--steps", "2", "--class-balanced"])
    sittings = json.loads((tmp_path / "run" / "commands.json").read_text())
    assert [(s["start_step"], s["end_step"], s["class_balanced"]) for s in sittings] == [
        (0, 1, False),
        (1, 2, True),
    ]
    assert exported == [1, 2]


def test_run_lso_tasks_continues_on_a_new_machine_from_the_shipped_samples(tmp_path, load_script, capsys):
    """The run folder of a seed's LSO tasks stays behind on the machine that ran them; the next machine has only
    the shipped samples file. Unpacking it must give back the same tasks, run only the missing ones, keep every
    sitting, and refuse a file made with other settings."""
    script = load_script("run_lso_tasks")
    out = tmp_path / "lso_samples_seed0.npz"
    toy = [
        "--seed",
        "0",
        "--val-classes",
        "1",
        "--episodes",
        "1",
        "--n-per-task",
        "2",
        "--magnitudes",
        "1.0",
        "--invert-steps",
        "2",
        "--lal-steps",
        "2",
        "--lsr-steps",
        "2",
        "--out",
        str(out),
    ]
    script.main(toy + ["--classes", "1", "--run-dir", str(tmp_path / "machine1")])
    first = dict(np.load(out))
    manifest = json.loads(out.with_name("lso_samples_seed0.manifest.json").read_text())
    assert manifest["tasks_done"] == manifest["tasks_planned"] == 2 and len(manifest["sittings"]) == 1

    # a new machine, one more evaluation class: the two shipped tasks are unpacked, only the third one runs
    script.main(toy + ["--classes", "2", "--run-dir", str(tmp_path / "machine2")])
    second = dict(np.load(out))
    manifest = json.loads(out.with_name("lso_samples_seed0.manifest.json").read_text())
    assert manifest["tasks_done"] == 3 and len(manifest["sittings"]) == 2
    assert (
        manifest["sittings"][0] == json.loads((tmp_path / "machine1" / "commands.json").read_text())[0]
    )  # the first machine's sitting, carried over
    for key in ("task_class", "task_episode", "task_validation", "task_sigma"):
        assert np.array_equal(second[key][:2], first[key]), key
    n_first = len(first["images"])
    assert np.array_equal(second["images"][:n_first], first["images"])  # the same samples, not rerun
    assert len(second["images"]) > n_first

    # other settings: refused with the setting named, and the shipped file untouched
    with pytest.raises(SystemExit):
        script.main(
            [a if a != "1.0" else "0.5" for a in toy]
            + ["--classes", "2", "--run-dir", str(tmp_path / "machine3")]
        )
    assert "magnitudes" in capsys.readouterr().err
    assert np.array_equal(dict(np.load(out))["images"], second["images"])
