"""The registry of shipped files: every file in data/ loads through it, and a missing or altered one is
refused with the command that rebuilds it."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict

import pytest
import torch

from fewshot_lib import artifacts
from fewshot_lib.checkpoint import file_sha256, save_atomic
from fewshot_lib.config import data_dir


def _shipped() -> list[str]:
    with pytest.MonkeyPatch.context() as mp:  # the real data/, whatever a test set FEWSHOT_DATA to
        mp.delenv("FEWSHOT_DATA", raising=False)
        return artifacts.names()


@pytest.mark.parametrize("name", _shipped())
def test_every_shipped_file_matches_its_manifest_and_loads(name):
    entry = artifacts.get(name)
    assert entry.check() == entry.path
    obj = entry.load()
    if entry.kind == "emoji_dataset":
        assert len(obj) > 1000 and obj.images.shape[1:] == (32, 32, 3)
    elif entry.kind == "feature_net":
        net, meta = obj
        assert net(torch.zeros(2, 3, 32, 32))["embed"].shape == (2, 256) and meta["name"]
    elif entry.kind == "stylegan2_generator":
        c = torch.zeros(2, dtype=torch.long) if obj.c_dim else None  # a conditional G needs classes
        img, _ = obj(torch.randn(2, obj.style_dim), c=c)
        assert img.shape == (2, 3, obj.size, obj.size) and torch.isfinite(img).all() and not obj.training
    elif entry.kind == "stylegan2_discriminator":
        c = torch.zeros(2, dtype=torch.long) if obj.c_dim else None
        assert obj(torch.zeros(2, 3, obj.size, obj.size), c=c).shape == (2, 1)
    elif entry.kind == "lofgan_generator":
        fake, _ = obj(torch.zeros(2, 3, 3, obj.size, obj.size))
        assert fake.shape == (2, 3, obj.size, obj.size)
    elif entry.kind == "lofgan_discriminator":
        adv, _ = obj(torch.zeros(2, 3, 32, 32))
        assert adv.shape == (2,)
    else:  # a new kind must get a branch here
        raise AssertionError(f"untested kind {entry.kind}")


def test_built_in_files_are_all_there():
    assert set(artifacts.BUILT_IN) <= set(_shipped())


def test_shipped_checkpoints_stay_within_their_budget():
    # issue #16: every shipped checkpoint together at most 80 MB (a clone must stay light)
    total = sum(f.stat().st_size for f in (data_dir() / "checkpoints").iterdir() if f.is_file())
    assert 0 < total <= 80 * 2**20, f"data/checkpoints holds {total / 2**20:.1f} MB (budget 80 MB)"


@pytest.mark.parametrize(
    "name, kind, command",
    [
        ("emoji_64", "emoji_dataset", "python -m fewshot_lib.data.emoji build --size 64"),
        ("emoji_features", "feature_net", "python scripts/train_feature_net.py"),
        ("emoji_features_seen", "feature_net", "train_feature_net.py --holdout-unseen-classes"),
        ("stylegan2_noto32", "stylegan2_generator", "train_source_model.py --name stylegan2_noto32"),
        ("stylegan2_notoflat32_d", "stylegan2_discriminator", "--name stylegan2_notoflat32 --export-only"),
        (
            "mixdl_showcase_mixdl",
            "stylegan2_generator",
            "python scripts/train_mixdl_showcase.py --variant mixdl",
        ),
        (
            "mixdl_showcase_mixdl_seed1_d",
            "stylegan2_discriminator",
            "train_mixdl_showcase.py --variant mixdl --seed 1",
        ),
        (
            "mixdl_showcase_stylegan2_seed2",
            "stylegan2_generator",
            "python scripts/train_mixdl_showcase.py --variant stylegan2 --seed 2",
        ),
        (
            "lofgan_emoji32_seed2",
            "lofgan_generator",
            "python scripts/train_lofgan.py --fusion local --seed 2",
        ),
        (
            "cdc_fluent_3d_shots1",
            "stylegan2_generator",
            "train_adaptation.py --method cdc --target-style fluent_3d --shots-seed 1",
        ),
        ("freezed_twemoji_shots0_d", "stylegan2_discriminator", "--method freezed --target-style twemoji"),
        (
            "stylegan2_cond_seen32",
            "stylegan2_generator",
            "python scripts/train_conditional_source.py --name stylegan2_cond_seen32",
        ),
        ("globalfusion_emoji32_seed1_d", "lofgan_discriminator", "train_lofgan.py --fusion global --seed 1"),
    ],
)
def test_names_say_kind_and_rebuild_command(name, kind, command):
    entry = artifacts.get(name)
    assert entry.kind == kind and command in entry.rebuild and entry.kind in artifacts.LOADERS
    assert entry.path.stem == name


def test_adaptation_names_are_written_and_read_by_one_rule():
    assert artifacts.adaptation_name("freezed", "fluent_3d", 12) == "freezed_fluent_3d_shots12"
    assert artifacts.parse_adaptation("freezed_fluent_3d_shots12") == ("freezed", "fluent_3d", 12)
    assert artifacts.parse_adaptation("cdc_fluent_3d_shots1_d") is None  # the discriminator: strip "_d" first
    assert artifacts.parse_adaptation("stylegan2_noto32") is None
    with pytest.raises(ValueError, match="adaptation export name"):
        artifacts.adaptation_name("mixdl", "twemoji", 0)  # not an adaptation method


def test_lofgan_discriminator_shares_the_generators_manifest():
    d = artifacts.get("lofgan_emoji32_seed0_d")
    assert d.manifest_path.name == "lofgan_emoji32_seed0.manifest.json" and d.sha_key == "d_sha256"


def test_bad_names_are_refused():
    with pytest.raises(ValueError, match="artifact name"):
        artifacts.get("checkpoints/stylegan2_noto32.pt")


@pytest.fixture
def tmp_data(tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_DATA", str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    return tmp_path


def test_missing_and_altered_files_name_the_rebuild_command(tmp_data):
    src = artifacts.get("mixdl_showcase_mixdl")
    with pytest.raises(artifacts.ArtifactMissing, match="train_mixdl_showcase.py --variant mixdl"):
        src.load()
    assert not src.available()
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("FEWSHOT_DATA")
        real, real_manifest = src.path, src.manifest_path
    shutil.copy(real, src.path)
    with pytest.raises(FileNotFoundError, match="manifest.json"):  # the file without its manifest
        src.check()
    shutil.copy(real_manifest, src.manifest_path)
    assert src.available() and src.check() == src.path
    raw = bytearray(src.path.read_bytes())
    raw[-50] ^= 0xFF
    src.path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="sha256.*train_mixdl_showcase.py --variant mixdl"):
        artifacts.load("mixdl_showcase_mixdl")
    assert "train_mixdl_showcase" in artifacts.check_all()["mixdl_showcase_mixdl"]


def test_a_discriminator_from_another_step_warns(tmp_data, caplog):
    from fewshot_lib.models.stylegan2 import Discriminator, Generator
    from fewshot_lib.models.stylegan2_io import export_discriminator, export_generator

    g_path, d_path = tmp_data / "checkpoints" / "tiny.pt", tmp_data / "checkpoints" / "tiny_d.pt"
    export_generator(Generator(16, 16, 2, channel_base=128, channel_max=16), g_path, n_mean=8)
    export_discriminator(Discriminator(16, channel_base=128, channel_max=16), d_path)
    for path, steps in ((g_path, 10), (d_path, 20)):
        artifacts.manifest_path(path).write_text(json.dumps({"sha256": file_sha256(path), "steps": steps}))
    assert artifacts.names() == sorted({*artifacts.BUILT_IN, "tiny", "tiny_d"})
    assert artifacts.load_source_model("tiny").size == 16
    with caplog.at_level("WARNING", logger="fewshot_lib.artifacts"):
        assert artifacts.load_source_discriminator("tiny").size == 16
    assert "from step 20" in caplog.text and "step 10" in caplog.text


def test_lofgan_exports_are_found_and_load(tmp_data):
    # The export format of scripts/train_lofgan.py: G and D files with cfg and classes, one manifest holding
    # both hashes.
    from fewshot_lib.methods.lofgan import LoFGANConfig
    from fewshot_lib.models.lofgan import LoFGANDiscriminator, LoFGANGenerator

    cfg = LoFGANConfig(size=16, feature_size=4, nf=4, nf_d=4, max_nf_d=16, fusion="local")
    torch.manual_seed(0)
    g = LoFGANGenerator(cfg.size, cfg.feature_size, cfg.nf, cfg.fusion, cfg.rate)
    d = LoFGANDiscriminator(3, cfg.size, cfg.feature_size, cfg.nf_d, cfg.max_nf_d)
    info = {
        "steps": 7,
        "classes": ["a", "b", "c"],
        "cfg": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
    }
    half = lambda m: {k: v.half() if v.is_floating_point() else v for k, v in m.state_dict().items()}  # noqa: E731
    out = tmp_data / "checkpoints" / "lofgan_emoji32_seed3.pt"
    save_atomic({**info, "g": half(g)}, out)
    save_atomic({**info, "d": half(d)}, out.with_name(f"{out.stem}_d.pt"))
    d_out = out.with_name(f"{out.stem}_d.pt")
    manifest = {"sha256": file_sha256(out), "d_sha256": file_sha256(d_out), "steps": 7}
    artifacts.manifest_path(out).write_text(json.dumps(manifest))

    assert {"lofgan_emoji32_seed3", "lofgan_emoji32_seed3_d"} <= set(artifacts.names())
    g2, d2 = artifacts.load("lofgan_emoji32_seed3"), artifacts.load("lofgan_emoji32_seed3_d")
    assert isinstance(g2, LoFGANGenerator) and isinstance(d2, LoFGANDiscriminator) and not g2.training
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    d.eval()
    torch.testing.assert_close(d2(x)[0], d(x)[0], atol=2e-2, rtol=1e-2)  # fp16 weights
    manifest["d_sha256"] = "0" * 64
    artifacts.manifest_path(out).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="train_lofgan.py --fusion local --seed 3"):
        artifacts.load("lofgan_emoji32_seed3_d")
    artifacts.load("lofgan_emoji32_seed3")  # G's own hash is still right


def test_old_loaders_go_through_the_registry():
    from fewshot_lib.methods import baselines, mixdl
    from fewshot_lib.metrics.features import emoji_checkpoint_path
    from fewshot_lib.models import stylegan2 as sg

    assert sg.load_source_model is artifacts.load_source_model
    assert sg.source_model_paths() == (
        artifacts.get("stylegan2_noto32").path,
        artifacts.get("stylegan2_noto32").manifest_path,
    )
    assert baselines.source_discriminator_paths()[0] == data_dir() / "checkpoints" / "stylegan2_noto32_d.pt"
    assert emoji_checkpoint_path() == artifacts.get("emoji_features").path
    g, meta = mixdl.load_showcase_generator("stylegan2")
    assert meta == artifacts.manifest("mixdl_showcase_stylegan2") and g.size == 32


def test_shipped_lofgan_exports_are_found_by_fusion_and_seed(tmp_data):
    from fewshot_lib.methods.lofgan import export_name, shipped_exports

    assert (
        export_name("local", 3) == "lofgan_emoji32_seed3"
        and export_name("global", 0) == "globalfusion_emoji32_seed0"
    )
    with pytest.raises(ValueError, match="fusion"):
        export_name("mixed", 0)
    assert shipped_exports("local") == {} == shipped_exports("global")
    for name in (
        "lofgan_emoji32_seed2",
        "lofgan_emoji32_seed2_d",
        "lofgan_emoji32_seed10",
        "globalfusion_emoji32_seed1",
    ):
        steps = 3_000 if name == "lofgan_emoji32_seed10" else 12_000  # seed 10: a run still in training
        (tmp_data / "checkpoints" / f"{name}.manifest.json").write_text(json.dumps({"steps": steps}))
        (tmp_data / "checkpoints" / f"{name}.pt").write_bytes(b"")  # names() lists files with manifests
    assert shipped_exports("local") == {
        2: "lofgan_emoji32_seed2",
        10: "lofgan_emoji32_seed10",
    }  # not the _d file
    assert shipped_exports("global") == {1: "globalfusion_emoji32_seed1"}
    assert shipped_exports("local", min_steps=10_000) == {2: "lofgan_emoji32_seed2"}  # long enough to compare


def test_showcase_seeds_have_their_own_names_rebuild_commands_and_listing(tmp_data):
    from fewshot_lib.methods import mixdl

    # seed 0 keeps the first shipped names; seed N >= 1 gets _seed<N>, and the rule reads back what it writes
    assert mixdl.showcase_name("mixdl") == "mixdl_showcase_mixdl" == mixdl.showcase_name("mixdl", 0)
    assert mixdl.showcase_name("stylegan2", 3) == "mixdl_showcase_stylegan2_seed3"
    for v in mixdl.SHOWCASE_VARIANTS:
        for s in (0, 1, 12):
            assert mixdl.parse_showcase_name(mixdl.showcase_name(v, s)) == (v, s)
    assert mixdl.parse_showcase_name("mixdl_showcase_mixdl_seed0") is None  # seed 0 has one name only
    assert mixdl.parse_showcase_name("mixdl_showcase_diffaugment_seed1") is None
    with pytest.raises(ValueError, match="seed"):
        mixdl.showcase_name("mixdl", -1)
    assert (
        artifacts.get("mixdl_showcase_mixdl").rebuild
        == "python scripts/train_mixdl_showcase.py --variant mixdl"
    )
    assert (
        artifacts.get("mixdl_showcase_mixdl_seed1").rebuild
        == "python scripts/train_mixdl_showcase.py --variant mixdl --seed 1"
    )
    # the listing: a seed counts for a variant when its file and manifest are there; with no variant, a seed
    # counts when every variant ships (a complete StyleGAN2-vs-MixDL pair)
    assert mixdl.shipped_showcase_seeds() == [] == mixdl.shipped_showcase_seeds("mixdl")
    for v, s, steps in (
        ("mixdl", 0, 10_000),
        ("stylegan2", 0, 10_000),
        ("mixdl", 1, 10_000),
        ("mixdl", 2, 500),
    ):
        name = mixdl.showcase_name(v, s)
        (tmp_data / "checkpoints" / f"{name}.manifest.json").write_text(json.dumps({"steps": steps}))
        (tmp_data / "checkpoints" / f"{name}.pt").write_bytes(b"")
    assert mixdl.shipped_showcase_seeds("mixdl") == [0, 1, 2]
    assert mixdl.shipped_showcase_seeds("mixdl", min_steps=10_000) == [0, 1]
    assert mixdl.shipped_showcase_seeds("stylegan2") == [0] == mixdl.shipped_showcase_seeds()
    with pytest.raises(ValueError, match="showcase variant"):
        mixdl.shipped_showcase_seeds("diffaugment")
    with pytest.raises(artifacts.ArtifactMissing, match="--variant stylegan2 --seed 1"):
        mixdl.load_showcase_generator("stylegan2", seed=1)
    # a pair's D (for --warm-start) is listed beside its G and checked against the G's manifest (d_sha256)
    (tmp_data / "checkpoints" / "mixdl_showcase_mixdl_seed1_d.pt").write_bytes(b"")
    assert "mixdl_showcase_mixdl_seed1_d" in artifacts.names() and mixdl.shipped_showcase_seeds("mixdl") == [
        0,
        1,
        2,
    ]
    d = artifacts.get("mixdl_showcase_mixdl_seed1_d")
    assert d.sha_key == "d_sha256" and d.manifest_path.name == "mixdl_showcase_mixdl_seed1.manifest.json"


def test_showcase_seeds_draw_different_shots():
    from fewshot_lib.methods import mixdl

    shots = [mixdl.category_task(seed=s)[0].flatten(1) for s in range(3)]
    for a in range(3):
        for b in range(a + 1, 3):
            shared = (torch.cdist(shots[a], shots[b]) == 0).any(1).sum().item()
            assert shared < len(shots[a]) // 2, (a, b, shared)  # different shot sets (a few may coincide)


def _shipped_lso_seeds() -> list[int]:
    from fewshot_lib.benchmark import LSOTasks
    from fewshot_lib.config import repo_root

    return LSOTasks.shipped_seeds(repo_root() / "data" / "lso")


@pytest.mark.parametrize("seed", _shipped_lso_seeds())
def test_shipped_lso_samples_match_their_manifest_source_and_training_network(seed):
    """LSO's shipped samples (scripts/run_lso_tasks.py): checksummed, made from the conditional source that ships
    now (samples of an older export would describe a model the package no longer has), trained with the
    network that never saw the unseen classes (never the judge), and every task complete in the file."""
    from fewshot_lib.benchmark import LSOTasks
    from fewshot_lib.config import repo_root

    tasks = LSOTasks.shipped(seed, repo_root() / "data" / "lso")  # raises on a sha256 mismatch
    man = tasks.manifest
    assert man["training_features"] == "emoji_features_seen" and man["seed"] == seed
    assert not tasks.stale, f"seed {seed}'s samples come from another export of {man['source']}: re-run them"
    assert 0 < man["tasks_done"] <= man["tasks_planned"] and man["sittings"]
    assert len(tasks.arrays["task_class"]) == man["tasks_done"]
    assert tasks.arrays["images"].dtype.name == "uint8" and tasks.arrays["images"].shape[1:] == (32, 32, 3)
