"""Tests for fewshot_lib.metrics: known answers on constructed cases, independent references, offline behaviour."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from fewshot_lib import metrics as M
from fewshot_lib.config import data_dir
from fewshot_lib.checkpoint import file_sha256
from fewshot_lib.metrics.features import EMOJI_CHECKPOINT, EMOJI_MANIFEST, FeatureExtractor


class PixelExtractor(FeatureExtractor):
    """Features and embeddings = flattened pixels: distances become plain squared Euclidean distances."""

    name = "pixels"

    def _features(self, x):
        return x.flatten(1)

    def _distance_embedding(self, x):
        return x.flatten(1)


def gaussian(n, d, mean=0.0, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * scale + mean


# ----------------------------------------------------------------------------------------------- FID / KID
def reference_frechet(mu1, s1, mu2, s2):
    """Independent reference: Tr sqrt(S1 S2) = Σ sqrt(eig(S1^½ S2 S1^½)), all via symmetric eigendecompositions."""
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return float(
        ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(inner, 0, None)).sum()
    )


def test_fid_identity_symmetry_and_reference():
    a, b = gaussian(400, 16, seed=1), gaussian(300, 16, mean=0.3, seed=2, scale=1.5)
    ext = PixelExtractor()
    assert abs(M.fid(a, a, ext).value) < 1e-6
    ab, ba = M.fid(a, b, ext).value, M.fid(b, a, ext).value
    assert ab == pytest.approx(ba, rel=1e-6)
    ref = reference_frechet(*M.feature_statistics(a), *M.feature_statistics(b))
    assert abs(ab - ref) <= 1e-3
    assert (
        abs(M.frechet_distance(*M.feature_statistics(a), *M.feature_statistics(b), method="sqrtm") - ref)
        <= 1e-3
    )
    assert ab > 1.0  # clearly different distributions


def test_fid_warns_about_a_small_set_once_per_size(caplog):
    # fewer samples than feature dimensions: a warning, said once per distinct size (a notebook judging six methods
    # on the same sets would otherwise repeat it a dozen times)
    ext = PixelExtractor()
    big, small, smaller = gaussian(60, 23, seed=5), gaussian(11, 23, seed=6), gaussian(9, 23, seed=7)
    with caplog.at_level("WARNING", logger="fewshot_lib.metrics.fid"):
        M.fid(big, small, ext)
        M.fid(big, small, ext)
        M.fid(big, gaussian(11, 23, seed=8), ext)
        said = [r.getMessage() for r in caplog.records if "feature dimensions" in r.getMessage()]
        assert said == [
            "FID with 11 fake samples < 23 feature dimensions: singular covariance, large bias (said "
            "once per set size)"
        ]
        M.fid(big, smaller, ext)
        M.fid(big, big, ext)  # no small set: nothing
    said = [r.getMessage() for r in caplog.records if "feature dimensions" in r.getMessage()]
    assert len(said) == 2 and said[1].startswith("FID with 9 fake samples < 23")


def test_fid_agrees_with_pytorch_fid():
    pf = pytest.importorskip("pytorch_fid.fid_score")
    a, b = gaussian(500, 32, seed=3), gaussian(500, 32, mean=0.1, seed=4, scale=0.8)
    ma, sa = M.feature_statistics(a)
    mb, sb = M.feature_statistics(b)
    np.testing.assert_allclose(sa, np.cov(a.numpy(), rowvar=False))
    reference = pf.calculate_frechet_distance(ma, sa, mb, sb)
    assert abs(M.frechet_distance(ma, sa, mb, sb) - reference) <= 1e-3
    assert abs(M.frechet_distance(ma, sa, mb, sb, method="sqrtm") - reference) <= 1e-3


def test_fid_one_dimensional_closed_form():
    # 1-D Gaussians: FID = (m1 - m2)^2 + (s1 - s2)^2
    assert M.frechet_distance(
        np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[1.0]])
    ) == pytest.approx(4.0 + 1.0)


def test_kid_unbiased_on_toy_gaussians():
    x, y = gaussian(20000, 8, seed=5), gaussian(20000, 8, mean=0.25, seed=6)
    big = M.polynomial_mmd_unbiased(x[:4000], y[:4000])
    g = torch.Generator().manual_seed(0)
    small, biased = [], []
    for _ in range(3000):
        xs, ys = (
            x[torch.randint(0, len(x), (10,), generator=g)],
            y[torch.randint(0, len(y), (10,), generator=g)],
        )
        small.append(M.polynomial_mmd_unbiased(xs, ys))
        k = lambda p, q: (p @ q.T / 8 + 1) ** 3  # noqa: E731 biased V-statistic for contrast
        biased.append(float(k(xs, xs).mean() + k(ys, ys).mean() - 2 * k(xs, ys).mean()))
    se = np.std(small) / math.sqrt(len(small))
    assert abs(np.mean(small) - big) < 4 * se + 0.01 * abs(big)  # unbiased at m = 10
    assert np.mean(biased) - big > 10 * se  # the naive estimator is not
    # same distribution: KID centred on zero, FID (biased) clearly positive at small n
    same = M.kid(x[:200], gaussian(200, 8, seed=7), PixelExtractor(), n_subsets=50, subset_size=100)
    assert abs(same.value) < 3 * same.std
    assert same.extractor == "pixels" and same.details["subset_size"] == 100


# ---------------------------------------------------------------------------------- precision / recall etc.
def grid(n_side, offset=(0.0, 0.0)):
    xs = torch.arange(n_side, dtype=torch.float64)
    pts = torch.cartesian_prod(xs, xs)
    return pts + torch.tensor(offset, dtype=torch.float64)


def test_precision_recall_density_coverage_known_answers():
    ext = PixelExtractor()
    real = grid(10)  # 100 points
    far = grid(10, offset=(1000.0, 1000.0))
    same = {**M.precision_recall(real, real, ext), **M.density_coverage(real, real, ext)}
    assert same["precision"].value == 1 and same["recall"].value == 1 and same["coverage"].value == 1
    away = {**M.precision_recall(real, far, ext), **M.density_coverage(real, far, ext)}
    assert away["precision"].value == 0 and away["recall"].value == 0
    assert away["density"].value == 0 and away["coverage"].value == 0
    mixed = {
        **M.precision_recall(real, torch.cat([real, far]), ext),
        **M.density_coverage(real, torch.cat([real, far]), ext),
    }
    assert mixed["precision"].value == pytest.approx(0.5) and mixed["coverage"].value == 1
    # mode dropping: real has two far-apart clusters, the generator reproduces only one
    two = torch.cat([real, far])
    dropped = {**M.precision_recall(two, real, ext), **M.density_coverage(two, real, ext)}
    assert dropped["precision"].value == 1
    assert dropped["recall"].value == pytest.approx(0.5) and dropped["coverage"].value == pytest.approx(0.5)


def test_density_on_triangles():
    # clusters of 3 points (equilateral, side 1) far apart; with k=2 every ball holds its whole triangle,
    # so each real point lies in 3 balls: density(real, real) = 3 / k = 1.5; centroids are in all 3 too.
    tri = torch.tensor([[0, 0], [1, 0], [0.5, math.sqrt(3) / 2]], dtype=torch.float64)
    real = torch.cat([tri + 100 * i for i in range(4)])
    ext = PixelExtractor()
    assert M.density_coverage(real, real, ext, k=2)["density"].value == pytest.approx(1.5)
    centroids = torch.stack([tri.mean(0) + 100 * i for i in range(4)])
    dc = M.density_coverage(real, centroids[:1], ext, k=2)
    assert dc["density"].value == pytest.approx(1.5) and dc["coverage"].value == pytest.approx(3 / 12)
    assert M.knn_radii(real, 2).tolist() == pytest.approx([1.0] * 12)


# ----------------------------------------------------------------------------------------------- diversity
def test_intra_cluster_lpips_constructed_case():
    ext = PixelExtractor()
    train = torch.tensor([[0.0, 0.0], [10.0, 0.0], [100.0, 100.0]])
    gen = torch.tensor([[1.0, 0.0], [0.0, 1.0], [9.0, 0.0], [10.0, 2.0], [10.0, -2.0]])
    r = M.intra_cluster_lpips(gen, train, ext)
    # cluster 0: one pair, d² = 2; cluster 1: pairs 5, 5, 16 → 26/3; cluster 2 empty → skipped
    assert r.details["cluster_sizes"] == [2, 3, 0]
    assert r.value == pytest.approx((2 + 26 / 3) / 2)
    assert math.isnan(r.details["per_cluster"][2]) and r.details["clusters_used"] == 2
    modes = M.nn_modes(gen, train, ext)
    assert modes.value == 2 and modes.details["counts"] == [2, 3, 0]
    assert modes.details["nn_lpips"] == pytest.approx((1 + 1 + 1 + 4 + 4) / 5)
    # memorising generator: copies of the shots → zero intra-cluster diversity, every shot a mode, nn distance 0
    copies = train.repeat(4, 1)
    assert M.intra_cluster_lpips(copies, train, ext).value == pytest.approx(0, abs=1e-9)
    mem = M.nn_modes(copies, train, ext)
    assert mem.value == 3 and mem.details["nn_lpips"] == pytest.approx(0, abs=1e-9)
    assert M.pairwise_lpips(copies, ext).value > 1000  # ... although the copies differ from each other


def test_pairwise_lpips_matches_explicit_pairs():
    ext = PixelExtractor()
    x = torch.randn(7, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    explicit = [
        float(ext.perceptual_distance(x[i : i + 1], x[j : j + 1])) for i in range(7) for j in range(i + 1, 7)
    ]
    r = M.pairwise_lpips(x, ext)
    assert r.value == pytest.approx(np.mean(explicit), rel=1e-5) and r.details["pairs"] == 21


def test_ppl_uniformity_linear_vs_jump():
    ext = PixelExtractor()
    w0, w1 = torch.zeros(4, 3), torch.ones(4, 3) * 2  # |Δ|² per image = 3 channels · 4 px · 4
    linear = lambda w: w.view(-1, 3, 1, 1).expand(-1, 3, 2, 2)  # noqa: E731
    r = M.ppl_uniformity(linear, w0, w1, ext)
    delta2 = 3 * 4 * 4.0
    assert r.value == pytest.approx(delta2) and r.details["uniformity"] == pytest.approx(0, abs=1e-3)
    assert r.details["endpoint_raw"] == pytest.approx(delta2) and r.details["endpoint"] == pytest.approx(
        delta2 / 0.01
    )
    jump = lambda w: (w > 1.0).double().view(-1, 3, 1, 1).expand(-1, 3, 2, 2) * 2  # noqa: E731 all change at t=0.5+
    j = M.ppl_uniformity(jump, w0, w1, ext)
    steps = np.zeros(10)
    steps[5] = delta2 / 0.01  # one sub-interval carries the whole change
    assert j.value == pytest.approx(steps.mean()) and j.details["uniformity"] == pytest.approx(
        steps.std(ddof=1)
    )
    assert j.details["uniformity"] > r.details["uniformity"] + 1


# ----------------------------------------------------------------------------------- the emoji feature net
def test_emoji_feature_net_checkpoint_hash_and_shapes():
    path = data_dir() / EMOJI_CHECKPOINT
    manifest = json.loads((data_dir() / EMOJI_MANIFEST).read_text())
    assert file_sha256(path) == manifest["sha256"]
    assert path.stat().st_size < 3_000_000
    val = manifest["validation"]
    assert val["val_concept_acc"] > 0.2 and val["val_style_acc"] > 0.8  # far above chance (1/1906, 1/5)
    assert manifest["unseen_style_run"]["val_concept_acc"] > 0.05
    ext = M.get_extractor("emoji")
    assert ext.name == manifest["name"]
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert ext.features(x).shape == (5, 256)
    assert ext.distance_embedding(x).shape == (5, 32 * 32 * 32 + 64 * 16 * 16 + 128 * 8 * 8 + 256 * 4 * 4)
    assert ext.features(torch.nn.functional.interpolate(x, size=64)).shape == (5, 256)  # other sizes resized
    d = ext.perceptual_distance(x, x.flip(0))
    assert d.shape == (5,) and torch.all(d[[0, 1, 3, 4]] > 0) and d[2] == pytest.approx(0, abs=1e-6)
    assert torch.allclose(d, ext.perceptual_distance(x.flip(0), x), atol=1e-6)
    assert torch.all(d <= 4)


def test_emoji_checkpoint_tampering_is_detected(tmp_path):
    src = data_dir() / EMOJI_CHECKPOINT
    dst = tmp_path / "emoji_features.pt"
    shutil.copy(src, dst)
    shutil.copy(data_dir() / EMOJI_MANIFEST, tmp_path / "emoji_features.manifest.json")
    raw = bytearray(dst.read_bytes())
    raw[-100] ^= 0xFF
    dst.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="sha256"):
        M.load_emoji_feature_net(dst)
    with pytest.raises(FileNotFoundError, match="emoji feature network"):
        M.load_emoji_feature_net(tmp_path / "missing.pt")


def test_trained_net_beats_random_net_on_concepts():
    from fewshot_lib.data.emoji import load_emoji

    data = load_emoji(styles=["noto", "fluent_flat"])
    keys = sorted(set(data.select(styles="noto").key) & set(data.select(styles="fluent_flat").key))[:300]
    a, b = (
        data.select(styles="noto").by_keys(keys).tensors(),
        data.select(styles="fluent_flat").by_keys(keys).tensors(),
    )

    def retrieval(ext):  # nearest fluent_flat drawing of each noto emoji is the same concept?
        fa, fb = ext.features(a), ext.features(b)
        return float((torch.cdist(fa, fb).argmin(1) == torch.arange(len(keys))).float().mean())

    trained, random = retrieval(M.get_extractor("emoji")), retrieval(M.get_extractor("emoji-random"))
    assert trained > 0.3 and trained > 3 * random


# --------------------------------------------------------------------------------------- offline behaviour
@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    for var in ("FEWSHOT_INCEPTION_WEIGHTS", "FEWSHOT_LPIPS_ALEX_WEIGHTS", "FEWSHOT_LPIPS_VGG_WEIGHTS"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


@pytest.mark.parametrize("name", ["inception", "lpips-alex", "lpips-vgg"])
def test_imagenet_extractors_never_download(empty_hub, name, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("attempted a download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        M.get_extractor(name)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        M.get_extractor(name, weights=empty_hub / "nope.pth")


def test_lpips_extractor_with_local_backbone_matches_lpips_package(empty_hub):
    import torchvision

    torch.manual_seed(0)
    feats = {k: v for k, v in torchvision.models.alexnet().state_dict().items() if k.startswith("features.")}
    path = empty_hub / "alexnet.pth"
    torch.save(feats, path)
    ext = M.get_extractor("lpips-alex", weights=path)
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1, torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    with torch.no_grad():
        expected = ext.model(x, y).flatten()
    assert torch.allclose(ext.perceptual_distance(x, y), expected, rtol=1e-4, atol=1e-6)
    assert ext.name == "lpips-alex"


def test_inception_extractor_with_local_weights(empty_hub, monkeypatch):
    pi = pytest.importorskip("pytorch_fid.inception")
    import torchvision

    # pytorch-fid's own architecture with random weights stands in for the real file
    with monkeypatch.context() as m:
        m.setattr(pi, "load_state_dict_from_url", lambda *a, **k: None)
        m.setattr(torchvision.models.Inception3, "load_state_dict", lambda self, state: None)
        state = pi.fid_inception_v3().state_dict()
    path = empty_hub / "inception.pth"
    torch.save(state, path)
    ext = M.get_extractor("inception", weights=path)
    feats = ext.features(torch.zeros(2, 3, 32, 32))
    assert feats.shape == (2, 2048) and ext.name == "inception"
    with pytest.raises(NotImplementedError):
        ext.distance_embedding(torch.zeros(1, 3, 32, 32))


# ------------------------------------------------------------------------------------ protocols and errors
def test_evaluate_against_set_and_per_class(monkeypatch):
    ext = M.get_extractor("emoji")
    g = torch.Generator().manual_seed(0)
    real = torch.rand(40, 3, 32, 32, generator=g) * 2 - 1
    shots = real[:5]
    fake = torch.cat([shots] * 4)
    res = M.evaluate_against_set(fake, real, train=shots, extractor=ext)
    assert set(res) == {
        "fid",
        "kid",
        "precision",
        "recall",
        "density",
        "coverage",
        "pairwise_lpips",
        "intra_cluster_lpips",
        "nn_modes",
    }
    assert all(r.extractor == ext.name for r in res.values())
    assert res["nn_modes"].value == 5 and res["intra_cluster_lpips"].value == pytest.approx(0, abs=1e-6)
    assert ext.name in str(res["fid"])
    assert json.dumps(M.results_to_dict(res))

    # the fakes go through the network once for all LPIPS-style metrics; embeddings passed in are used as they are
    calls = []
    embed = ext.distance_embedding
    monkeypatch.setattr(
        ext, "distance_embedding", lambda x, *a, **kw: calls.append(len(x)) or embed(x, *a, **kw)
    )
    again = M.evaluate_against_set(fake, real, train=shots, extractor=ext)
    assert sorted(calls) == [len(shots), len(fake)]  # the shots once, the fakes once
    calls.clear()
    given = M.evaluate_against_set(fake, real, train=shots, extractor=ext, fake_embeddings=embed(fake))
    assert calls == [len(shots)]
    monkeypatch.undo()  # the class's method again for the rest of the test
    for key in ("pairwise_lpips", "intra_cluster_lpips", "nn_modes"):
        assert again[key].value == res[key].value and given[key].value == pytest.approx(
            res[key].value, abs=1e-6
        )

    by_class = {"a": real[:15], "b": real[15:30]}
    cond, held = M.conditioning_split(by_class, n_condition=5, seed=0)
    assert {c: len(x) for c, x in cond.items()} == {"a": 5, "b": 5} and len(held["a"]) == 10
    mean_of_shots = lambda shots: shots.mean(dim=1)  # noqa: E731 a trivial "fusion" generator
    r1, fakes = M.evaluate_per_class(
        mean_of_shots, cond, held, k=3, n_per_class=6, extractor=ext, return_samples=True
    )
    r2 = M.evaluate_per_class(mean_of_shots, cond, held, k=3, n_per_class=6, extractor=ext)
    assert fakes["a"].shape == (6, 3, 32, 32) and r1["fid"].n_fake == 12 and r1["fid"].n_real == 20
    assert r1["lpips"].value == r2["lpips"].value and r1["fid"].value == r2["fid"].value  # seeded


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="Unknown feature extractor"):
        M.get_extractor("alexnet")
    with pytest.raises(ValueError, match="real"):
        M.fid(torch.zeros(3, 4, 5), torch.zeros(3, 4), PixelExtractor())
    with pytest.raises(ValueError, match="differ in dimension"):
        M.fid(torch.zeros(3, 4), torch.zeros(3, 5), PixelExtractor())
    with pytest.raises(ValueError, match="train"):
        M.evaluate_against_set(
            torch.zeros(4, 2), torch.zeros(4, 2), extractor=PixelExtractor(), metrics=["nn_modes"]
        )
    with pytest.raises(ValueError, match="same shape"):
        M.ppl_uniformity(lambda w: w, torch.zeros(2, 3), torch.zeros(3, 3), PixelExtractor())
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        M.get_extractor("emoji").features(torch.zeros(2, 1, 32, 32))


def test_kid_kernel_reuse_matches_per_subset_estimates():
    a, b = gaussian(300, 16, seed=8).float(), gaussian(200, 16, mean=0.2, seed=9).float()
    r = M.kid(a, b, PixelExtractor(), n_subsets=20, subset_size=100, seed=0)
    g = torch.Generator().manual_seed(0)
    explicit = []
    for _ in range(20):
        ir, i_f = torch.randperm(300, generator=g)[:100], torch.randperm(200, generator=g)[:100]
        explicit.append(M.polynomial_mmd_unbiased(a[ir], b[i_f]))
    assert r.value == pytest.approx(np.mean(explicit), rel=1e-9) and r.std == pytest.approx(
        np.std(explicit, ddof=1)
    )


# -------------------------------------------------------------------------------------------- recognisability
def test_recognisability_orders_real_blurred_and_noise():
    import torch.nn.functional as F
    from fewshot_lib.data.emoji import load_emoji

    real = load_emoji(styles=["noto"]).tensors()
    perm = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))
    ref, held_out = real[perm[:1200]], real[perm[1200:1500]]  # held-out reals play the "fakes"

    def shrunk(x, size):  # detail lost, layout and colour kept
        return F.interpolate(F.interpolate(x, size=size, mode="area"), size=32, mode="bilinear")

    noise = torch.rand(100, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    scores = {
        name: M.recognisability(ref, x)
        for name, x in [
            ("real", held_out),
            ("16px", shrunk(held_out, 16)),
            ("8px", shrunk(held_out, 8)),
            ("noise", noise),
        ]
    }
    value = {k: r.value for k, r in scores.items()}
    assert value["real"] > 0.8 and value["real"] >= value["16px"] > value["8px"] + 0.2
    # noise alone fools the classifier (it is confidently "named") but is nowhere near a real emoji
    assert value["noise"] == 0.0 and scores["noise"].details["named"] > 0.5
    assert scores["noise"].details["inside_real_manifold"] == 0.0
    assert (
        scores["real"].extractor == "emoji-features-v1"
        and sum(scores["real"].details["commonest"].values()) > 0
    )


def test_recognisable_examples_pick_confident_varied_images_inside_the_manifold():
    from fewshot_lib.data.emoji import load_emoji
    from fewshot_lib.metrics.recognisability import recognisable_examples

    ext = M.get_extractor("emoji")
    real = load_emoji(styles=["noto"]).tensors()
    noise = torch.rand(20, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    images = torch.cat([noise, real[:40]])  # the first 20 are noise: named, maybe, but never inside
    idx, labels, n_recognised = recognisable_examples(images, ext.features(real, show_progress=False), ext, 6)
    assert len(idx) == len(labels) == 6 and (idx >= 20).all()  # no noise shown while real images remain
    assert len({lab.rsplit(" ", 1)[0] for lab in labels}) == 6  # one per subcategory
    confidences = [float(lab.rsplit(" ", 1)[1]) for lab in labels]
    assert confidences == sorted(confidences, reverse=True) and 0 < n_recognised <= 40


def test_recognisability_needs_the_classifier_head():
    x = torch.zeros(4, 3, 32, 32)
    with pytest.raises(ValueError, match="subcategory head"):
        M.recognisability(x, x, extractor="emoji-random")
    with pytest.raises(ValueError, match="threshold"):
        M.recognisability(x, x, threshold=1.0)


def test_novel_concept_split_holds_out_every_drawing_of_a_concept(emoji, load_script):
    # run C of scripts/train_feature_net.py: the network must never see a held-out concept, in any style
    script = load_script("train_feature_net")
    held = script.novel_concept_split(emoji, 0.2, np.random.default_rng(0))
    noto_keys = set(emoji.key[emoji.style == "noto"].tolist())
    held_keys = set(emoji.key[held].tolist())
    assert len(held_keys) == int(0.2 * len(noto_keys)) and held_keys <= noto_keys
    assert not held_keys & set(emoji.key[~held].tolist())
    assert held_keys == set(emoji.key[held & (emoji.style == "noto")].tolist())  # each has its noto drawing
    assert held.sum() > len(held_keys)  # and drawings in other styles
    assert (script.novel_concept_split(emoji, 0.2, np.random.default_rng(0)) == held).all()
    assert not (script.novel_concept_split(emoji, 0.2, np.random.default_rng(1)) == held).all()


def test_feature_net_run_c_records_the_novel_emoji_yardstick(tmp_path, monkeypatch, capsys, load_script):
    # One short epoch (3 batches) end to end on the embedded data; --record-in-manifest adds the result to (a copy
    # of) the shipped manifest without touching the rest, and novel_emoji_reference() reads it back.
    data = tmp_path / "data"
    (data / "checkpoints").mkdir(parents=True)
    for name in ("emoji_32.npz", "emoji_32.manifest.json"):
        (data / name).symlink_to(data_dir() / name)
    before = json.loads((data_dir() / EMOJI_MANIFEST).read_text())
    before.pop("novel_concept_run", None)
    (data / EMOJI_MANIFEST).write_text(json.dumps(before))
    monkeypatch.setenv("FEWSHOT_DATA", str(data))
    assert M.novel_emoji_reference() is None
    script = load_script("train_feature_net")
    with pytest.raises(SystemExit):
        script.main(["--holdout-concepts", "0.1"])  # no --out: it would overwrite the shipped network
    assert "own --out" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--record-in-manifest", "--out", str(tmp_path / "b.pt")])
    assert "belongs to run C" in capsys.readouterr().err

    result = script.main(
        [
            "--holdout-concepts",
            "0.1",
            "--epochs",
            "1",
            "--max-batches",
            "3",
            "--out",
            str(tmp_path / "c.pt"),
            "--record-in-manifest",
        ]
    )
    assert result["n_novel_noto"] == result["n_seen_noto"] == int(0.1 * 1906)
    assert result["batches_per_epoch"] == 3  # --max-batches capped the epoch
    for which in ("novel", "seen"):
        assert (
            0
            <= result[f"{which}_noto_recognisability"]
            <= min(result[f"{which}_noto_named"], result[f"{which}_noto_inside_real_manifold"])
        )
    after = json.loads((data / EMOJI_MANIFEST).read_text())
    assert after.pop("novel_concept_run") == result and after == before
    assert json.loads((tmp_path / "c.json").read_text()) == result
    ref = M.novel_emoji_reference()
    assert ref["novel"] == result["novel_noto_recognisability"] and ref["n_novel"] == result["n_novel_noto"]
    # retraining the shipped network (run B) rewrites its manifest but keeps run C's yardstick
    script.main(["--epochs", "1", "--max-batches", "1"])
    assert json.loads((data / EMOJI_MANIFEST).read_text())["novel_concept_run"] == result
    assert M.novel_emoji_reference() == ref


def test_shipped_novel_emoji_yardstick():
    # Recorded by run C (the command is in the manifest): real emoji the network never saw are markedly less
    # recognisable than the ones it trained on — the fair ceiling for a generator's new samples.
    ref = M.novel_emoji_reference()
    assert ref is not None and "--holdout-concepts" in ref["command"] and ref["n_novel"] >= 300
    assert ref["seen"] > 0.9 and 0.3 < ref["novel"] < ref["seen"] - 0.1
