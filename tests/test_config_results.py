"""Profiles, devices, seeds, checkpoints and the claims ledger."""

import json
import math

import pytest
import torch

from fewshot_lib.checkpoint import load_checkpoint, save_atomic
from fewshot_lib.config import by_profile, get_device, make_run_dir, resolve_profile, seed_everything
from fewshot_lib.results import beats_floors, format_claim, make_claim, read_metrics, write_metrics


def test_profile_resolution(monkeypatch):
    monkeypatch.delenv("FEWSHOT_PROFILE", raising=False)
    assert resolve_profile("auto") == ("full" if torch.cuda.is_available() else "lab")
    monkeypatch.setenv("FEWSHOT_PROFILE", "smoke")
    assert resolve_profile("auto") == "smoke"
    assert resolve_profile("LAB") == "lab"  # explicit wins over the environment
    with pytest.raises(ValueError, match="Unknown profile"):
        resolve_profile("huge")
    assert by_profile("smoke", smoke=1, lab=2, full=3) == 1


def test_device_fallback_and_explicit_errors():
    assert get_device("cpu").type == "cpu"
    assert get_device("auto").type in ("cuda", "mps", "cpu")
    if not torch.cuda.is_available():
        assert get_device("auto").type in ("mps", "cpu")
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            get_device("cuda")


def test_seed_everything_reproduces_all_generators():
    g = seed_everything(7)
    a = (torch.randn(3, generator=g), torch.rand(2))
    g = seed_everything(7)
    b = (torch.randn(3, generator=g), torch.rand(2))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_run_dir_created(tmp_path):
    assert make_run_dir(tmp_path / "x" / "y").is_dir()


def test_checkpoint_atomic_round_trip_and_errors(tmp_path):
    path = tmp_path / "ck.pt"
    save_atomic({"w": torch.arange(3), "step": 5}, path)
    assert load_checkpoint(path)["step"] == 5
    assert not list(tmp_path.glob(".*tmp"))  # no temp files left behind
    (tmp_path / "plain.txt").write_text("x")  # same permissions as a file written the plain way
    assert path.stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_checkpoint(tmp_path / "empty.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="could not be read"):
        load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "absent.pt")


def test_checkpoint_with_pickled_objects_is_refused(tmp_path):
    import argparse  # rosinality checkpoints carry an argparse.Namespace like this one

    torch.save({"args": argparse.Namespace(size=256)}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="weights_only"):
        load_checkpoint(tmp_path / "pickled.pt")


def test_interrupted_save_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    save_atomic({"step": 1}, path)

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_atomic({"step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1 and len(list(tmp_path.iterdir())) == 1


def test_claim_rule_better():
    clear = make_claim(
        "c", "m", "x", "a", "b", [0.50, 0.52, 0.51], [0.40, 0.41, 0.39], higher_is_better=True, kind="sanity"
    )
    assert clear["holds"] and clear["seeds"] == 3 and clear["verdict"] == "holds"
    se = math.sqrt(clear["method_std"] ** 2 / 3 + clear["baseline_std"] ** 2 / 3)
    assert clear["margin"] == pytest.approx(2 * se)
    noisy = make_claim("c", "m", "x", "a", "b", [0.5, 0.1, 0.9], [0.45, 0.05, 0.85], True, kind="sanity")
    assert (
        noisy["holds"] is False and noisy["verdict"] == "does not hold"
    )  # better on average, within the noise
    lower = make_claim(
        "c", "fid", "x", "a", "b", [10, 11, 10.5], [20, 21, 19], higher_is_better=False, kind="sanity"
    )
    assert lower["holds"] and lower["improvement"] > 0
    wrong_way = make_claim("c", "fid", "x", "a", "b", [20, 21, 19], [10, 11, 10.5], False, kind="sanity")
    assert wrong_way["holds"] is False


def test_claim_rule_not_worse_and_inconclusive():
    same = make_claim(
        "c",
        "fid",
        "x",
        "a",
        "b",
        [10, 10.4, 10.2],
        [10.3, 10.1, 10.2],
        False,
        test="not_worse",
        kind="sanity",
    )
    assert same["holds"] and same["margin"] < 0.1 * 10.2
    worse = make_claim(
        "c", "fid", "x", "a", "b", [30, 30.4, 30.2], [10, 10.4, 10.2], False, test="not_worse", kind="sanity"
    )
    assert worse["holds"] is False
    # 05's old case: noisy seeds make "not worse" hold by a wide margin — now inconclusive, whatever the difference
    for method in ([233, 180, 290], [150, 100, 190]):
        wide = make_claim(
            "c", "fid", "x", "a", "b", method, [230, 170, 280], False, test="not_worse", kind="sanity"
        )
        assert wide["margin"] > 0.1 * 226 and wide["holds"] is None and wide["verdict"] == "inconclusive"
    with pytest.raises(ValueError):
        make_claim("c", "m", "x", "a", "b", [], [1.0], True)
    with pytest.raises(ValueError, match="kind"):
        make_claim("c", "m", "x", "a", "b", [1.0], [1.0], True, kind="paperish")


def test_paper_claims_are_judged_only_when_both_sides_beat_the_image_floors():
    floors = {"fid": 300.0, "recognisability": 0.40, "extractor": "emoji-features-v1", "n_reference": 1906}
    images = {"fid": 60.0, "recognisability": 0.55}
    blobs = {"fid": 180.0, "recognisability": 0.12}  # below the 8-px floor: not yet images
    args = ("c", "fid", "x", "a", "b", [50, 51, 52], [90, 91, 92], False)
    judged = make_claim(*args, floors=floors, method_side=images, baseline_side=images)
    assert judged["measurable"] and judged["holds"] and judged["floor_check"]["beats"]["method"]["fid"]
    assert set(judged["floor_check"]["beats"]["method"]) == {"fid", "recognisability"}  # not n_reference
    for method_side, baseline_side in ((blobs, images), (images, blobs), (blobs, blobs)):
        c = make_claim(*args, floors=floors, method_side=method_side, baseline_side=baseline_side)
        assert c["holds"] is None and c["verdict"] == "not measurable at this budget" and not c["measurable"]
    no_evidence = make_claim(*args)  # a paper claim without a floor check
    assert no_evidence["holds"] is None and no_evidence["floor_check"] == "no floor evidence given"
    assert make_claim(*args, kind="sanity")["holds"]  # metric checks compare degraded images
    assert beats_floors({"fid": float("nan")}, {"fid": 300.0}) == {"fid": False}
    lab = make_claim(*args, floors=floors, method_side=images, baseline_side=images, regime="lab")
    assert lab["regime"] == "lab" and "[50, 51, 52]" in format_claim(lab)


def test_write_and_read_metrics(tmp_path):
    claim = make_claim("c", "m", "x", "a", "b", [1.0, 2.0], [0.0, 0.5], True)
    path = write_metrics(tmp_path, {"fid": torch.tensor(3.5), "nan": float("nan")}, "nb", "smoke", [claim])
    data = read_metrics(path)
    assert data["metrics"] == {"fid": 3.5, "nan": None} and data["claims"][0]["claim"] == "c"
    (tmp_path / "bad.json").write_text(json.dumps({"metrics": {}}))
    with pytest.raises(ValueError, match="lacks the key"):
        read_metrics(tmp_path / "bad.json")


def test_write_and_read_samples_keep_every_image_with_its_method_task_and_seed(tmp_path):
    import numpy as np
    import torch

    from fewshot_lib.results import read_samples, write_samples

    a = torch.linspace(-1, 1, 2 * 3 * 4 * 4).view(2, 3, 4, 4)
    b = -torch.ones(3, 3, 4, 4)
    path = write_samples(tmp_path, [("lofgan", "noto/animal-bird", 0, a), ("copy", "noto/arrow", 1, b)])
    got = read_samples(path)
    assert got["images"].shape == (5, 4, 4, 3) and got["images"].dtype == np.uint8
    assert got["method"].tolist() == ["lofgan"] * 2 + ["copy"] * 3 and got["seed"].tolist() == [0, 0, 1, 1, 1]
    assert got["task"][2] == "noto/arrow" and (got["images"][2:] == 0).all()
    assert got["images"][0, 0, 0, 0] == 0 and got["images"][1, 3, 3, 2] == 255  # [-1, 1] → [0, 255], HWC
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically
    with pytest.raises(ValueError, match="images must be"):
        write_samples(tmp_path, [("m", "t", 0, torch.zeros(3, 4, 4))])
    np.savez(tmp_path / "other.npz", x=np.zeros(2))
    with pytest.raises(ValueError, match="lacks"):
        read_samples(tmp_path / "other.npz")
