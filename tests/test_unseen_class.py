"""Per-episode metrics for k-shot generators (class consistency, near-copies) and the ledger's image floors."""

import pytest
import torch

from fewshot_lib.data.emoji import load_emoji
from fewshot_lib.metrics import get_extractor
from fewshot_lib.metrics.floors import image_floors, shrink_and_enlarge
from fewshot_lib.metrics.recognisability import recognisability
from fewshot_lib.metrics.unseen_class import (
    UnseenClassJudge,
    class_consistency,
    near_copy_fraction,
    sample_episodes,
    subcategory_of,
    unseen_class_report,
)


@pytest.fixture(scope="module")
def ext():
    return get_extractor("emoji")


@pytest.fixture(scope="module")
def classes():
    data = load_emoji(styles=["noto"])
    subs = ["face-smiling", "animal-bird", "food-fruit"]
    out = {}
    for sub in subs:
        idx = [i for i, s in enumerate(data.subcategory) if s == sub][:16]
        out[f"noto/{sub}"] = data.tensors()[idx]
    return out


def test_class_consistency_separates_real_members_from_noise(classes, ext):
    real = class_consistency(classes, ext)
    noise = class_consistency({c: torch.rand_like(x) * 2 - 1 for c, x in classes.items()}, ext)
    assert real.value > 0.8 and noise.value < 0.4 and set(real.details["per_class"]) == set(classes)
    assert subcategory_of("twemoji/animal-bird") == "animal-bird"
    with pytest.raises(ValueError, match="subcategory"):
        class_consistency({"noto/not-a-subcategory": classes["noto/animal-bird"]}, ext)


def test_near_copies_count_samples_that_reproduce_one_of_their_own_shots(classes):
    pools = {c: x[:8] for c, x in classes.items()}
    copy_first = lambda shots: shots[:, 0]  # noqa: E731
    fakes, shots = sample_episodes(copy_first, pools, k=3, n_per_class=6, seed=0)
    assert fakes["noto/animal-bird"].shape == (6, 3, 32, 32) and shots["noto/animal-bird"].shape == (
        6,
        3,
        3,
        32,
        32,
    )
    assert near_copy_fraction(fakes, shots).value == 1.0
    others = {c: classes[c][8:14] for c in classes}  # other members, never shots
    assert near_copy_fraction(others, shots).value < 0.5
    again, _ = sample_episodes(copy_first, pools, k=3, n_per_class=6, seed=0)
    assert all(torch.equal(again[c], fakes[c]) for c in fakes)  # seeded episodes
    with pytest.raises(ValueError, match="pool"):
        sample_episodes(copy_first, pools, k=9, n_per_class=2)
    with pytest.raises(ValueError, match="k ≥ 2"):
        near_copy_fraction(*sample_episodes(lambda s: s[:, 0], pools, k=1, n_per_class=2))


def test_unseen_class_report_names_its_extractor(classes, ext):
    pools = {c: x[:8] for c, x in classes.items()}
    held = {c: x[8:] for c, x in classes.items()}
    fakes, shots = sample_episodes(lambda s: s.mean(1), pools, k=3, n_per_class=8)  # blurry averages of shots
    report = unseen_class_report(fakes, shots, held, extractor=ext)
    assert set(report) == {"class_consistency", "near_copies", "recognisability", "lpips_diversity", "fid"}
    assert all(r.extractor == "emoji-features-v1" for r in report.values())
    # one judge for many generators gives the same numbers as the metrics computed one by one
    judge = UnseenClassJudge(held, extractor=ext)
    copies, copy_shots = sample_episodes(lambda s: s[:, 0], pools, k=3, n_per_class=8, seed=1)
    for f, s in ((fakes, shots), (copies, copy_shots)):
        by_judge = judge(f, s)
        assert by_judge["class_consistency"].value == class_consistency(f, ext).value
        assert by_judge["near_copies"].value == near_copy_fraction(f, s, extractor=ext).value
        real = torch.cat(list(held.values()))
        assert (
            by_judge["recognisability"].value
            == recognisability(real, torch.cat(list(f.values())), extractor=ext).value
        )
        assert abs(by_judge["fid"].value - unseen_class_report(f, s, held, extractor=ext)["fid"].value) < 1e-6
    assert judge(copies, copy_shots)["near_copies"].value == 1.0
    values = judge.values(fakes, shots)  # what an Experiment variant returns: the same numbers, as floats
    assert values == {name: r.value for name, r in judge(fakes, shots).items()}
    assert all(isinstance(v, float) for v in values.values())
    with pytest.raises(ValueError, match="no held-out images"):
        judge({"noto/unknown": copies[next(iter(copies))]}, copy_shots)


def test_image_floors_sit_below_real_images():
    real = load_emoji(styles=["noto"]).tensors()[:400]
    floors = image_floors(real)
    assert (
        0.1 < floors["recognisability"] < 0.8
        and floors["fid"] > 300
        and floors["extractor"] == "emoji-features-v1"
    )
    assert shrink_and_enlarge(real[:2]).shape == real[:2].shape
    # against another manifold (every noto emoji, as notebook 06 measures its samples) the floor is measured there
    wider = image_floors(real, manifold=load_emoji(styles=["noto"]).tensors()[:800])
    assert wider["fid"] == floors["fid"] and wider["recognisability"] != floors["recognisability"]
