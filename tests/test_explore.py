"""The latent explorer: pure render functions (headless) and the widgets' error and scheduling behaviour."""

import datetime
import io

import numpy as np
import pytest
import torch
from PIL import Image

from fewshot_lib.explore import (
    Directions,
    ExploreInputError,
    LatentSpace,
    edit_latents,
    export_latent,
    label_directions,
    load_any_generator,
    parse_seeds,
    png_bytes,
    project_image,
    read_image,
    render_edit,
    render_interpolation,
    render_mixing,
    render_seeds,
    render_walk,
    spearman,
)
from fewshot_lib.explore import widgets as xw
from fewshot_lib.models import stylegan2 as sg

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def space():
    if sg.source_model_available():
        G = sg.load_source_model()
    else:  # pragma: no cover - the model ships with the repository
        G = sg.Generator(32, style_dim=32, n_mlp=2, channel_base=256, channel_max=32).eval()
    return LatentSpace(G, n_samples=3000)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return sg.Generator(16, style_dim=16, n_mlp=2, channel_base=64, channel_max=16).eval()


def _png(size=(40, 50), mode="RGB") -> bytes:
    buf = io.BytesIO()
    arr = (np.random.default_rng(0).random((size[1], size[0], len(mode))) * 255).astype("uint8")
    Image.fromarray(arr, mode).save(buf, "PNG")
    return buf.getvalue()


# -- input parsing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, expected",
    [("0-3", [0, 1, 2, 3]), ("3, 5,11", [3, 5, 11]), (7, [7]), ([1, 2], [1, 2]), ("2-3, 9", [2, 3, 9])],
)
def test_parse_seeds(given, expected):
    assert parse_seeds(given) == expected


@pytest.mark.parametrize(
    "bad, words",
    [
        (1.5, "unsupported type float"),
        ("abc", "'abc' is not a whole number"),
        ("5-2", "backwards"),
        ("", "empty"),
        (True, "bool"),
        ([1, "x"], "unsupported type"),
        ("0-99", "at most"),
        (None, "unsupported type NoneType"),
    ],
)
def test_parse_seeds_bad_input_is_named(bad, words):
    with pytest.raises(ExploreInputError, match="seeds") as e:
        parse_seeds(bad)
    assert words in str(e.value)


# -- directions -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, layers", [("pca", None), ("sefa", None), ("sefa", (0, 3)), ("sefa", (4, 8))]
)
def test_directions_orthonormal_and_sorted(space, method, layers):
    d = space.directions(method, 8, layers)
    v = d.vectors.double()
    assert v.shape == (8, space.style_dim)
    assert torch.allclose(v @ v.T, torch.eye(8, dtype=torch.double), atol=1e-5)
    assert torch.all(d.strength[:-1] >= d.strength[1:]) and torch.all(d.strength > 0)
    assert torch.all(d.scales > 0)
    assert space.directions(method, 8, layers) is d  # cached


def test_ganspace_is_pca_of_mapped_latents(space):
    d = space.directions("pca", 3)
    w = space.w_samples.double().numpy()
    evals, evecs = np.linalg.eigh(np.cov(w, rowvar=False))
    top = evecs[:, ::-1][:, :3].T
    assert np.allclose(np.abs((top * d.vectors.double().numpy()).sum(1)), 1, atol=1e-4)
    assert np.allclose(d.strength.numpy(), evals[::-1][:3], rtol=1e-3)


def test_sefa_differs_by_layer_range_and_rejects_empty(space):
    a, b = space.directions("sefa", 2, (0, 3)), space.directions("sefa", 2, (4, 8))
    assert abs(float(a.vectors[0] @ b.vectors[0])) < 0.99
    with pytest.raises(ExploreInputError, match="empty"):
        space.directions("sefa", 2, (3, 3))
    with pytest.raises(ExploreInputError, match="'ica'"):
        space.directions("ica", 2)


# -- interpolation, mixing, editing -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["w", "z"])
@pytest.mark.parametrize("psi", [1.0, 0.6])
def test_interpolation_endpoints_equal_the_two_samples(space, kind, psi):
    r = render_interpolation(space, 3, 11, steps=6, kind=kind, psi=psi)
    ends = render_seeds(space, [3, 11], psi)
    assert r.images.shape == (6, 32, 32, 3) and r.images.dtype == np.uint8
    assert torch.equal(r.latents[0], ends.latents[0]) and torch.equal(r.latents[-1], ends.latents[1])
    # same latents; the synthesis batch differs (6 vs 2 images), so allow one grey level of float rounding
    for got, want in ((r.images[0], ends.images[0]), (r.images[-1], ends.images[1])):
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    assert not np.array_equal(r.images[2], r.images[0])


def test_style_mixing_empty_range_is_the_first_image(space):
    a = render_seeds(space, 5).images[0]
    for lo in (0, 3, 8):
        r = render_mixing(space, 5, "1-3", layers=(lo, lo))
        assert r.images.shape[0] == 8 and r.nrow == 4
        for img in r.images[4:]:
            assert np.array_equal(img, a)
    full = render_mixing(space, 5, "1-3", layers=(0, 8))  # every layer from B = B itself
    assert np.array_equal(full.images[5:], full.images[1:4])
    part = render_mixing(space, 5, "1-3", layers=(0, 4))
    assert not np.array_equal(part.images[5], a)
    assert torch.equal(part.latents[5, 4:], part.latents[0, 4:]) and torch.equal(
        part.latents[5, :4], part.latents[1, :4]
    )


@pytest.mark.parametrize("layers", [(0, 9), (-1, 3), (5, 2), "x"])
def test_layer_range_outside_the_model_is_a_clear_message(space, layers):
    with pytest.raises(ExploreInputError, match=r"layers: .*(outside this model|not a pair)"):
        render_mixing(space, 0, "1", layers=layers)


def test_edits_zero_sliders_or_empty_range_change_nothing(space):
    base = render_seeds(space, "0-3")
    d = space.directions("pca", 4)
    assert torch.equal(edit_latents(space, space.w("0-3"), d, [0, 0, 0, 0]), base.latents)
    assert torch.equal(edit_latents(space, space.w("0-3"), d, [2, -1], (2, 2)), base.latents)
    moved = edit_latents(space, space.w("0-3"), d, [2.0], (2, 5))
    delta = moved - base.latents
    assert torch.allclose(delta[:, 2:5], (2 * d.scales[0] * d.vectors[0]).expand(4, 3, -1), atol=1e-5)
    assert torch.all(delta[:, :2] == 0) and torch.all(delta[:, 5:] == 0)
    r = render_edit(space, "0-3", "sefa", [1.5, 0, -1], (0, 8))
    assert r.images.shape == (4, 32, 32, 3) and not np.array_equal(r.images, base.images)
    with pytest.raises(ExploreInputError, match="slider 0"):
        render_edit(space, "0-3", "pca", [float("nan")])


# -- labels: monotonic along the direction, or dropped ----------------------------------------------------


class _BrightnessNet(torch.nn.Module):
    """A stand-in for the emoji network whose 'style' is how bright the image is."""

    def forward(self, x):
        m = x.mean((1, 2, 3))
        return {"style": torch.stack([8 * m, torch.zeros_like(m)], 1)}


class _FakeExtractor:
    device = torch.device("cpu")
    net = _BrightnessNet()
    meta = {"styles": ["bright", "dark"]}

    def _prepare(self, x):
        return x


def _check_rule(space, d, labels, extractor, seeds, alphas=(-3, -2, -1, 0, 1, 2, 3)):
    """Recompute each label's per-seed Spearman independently from rendered walks and apply the rule."""
    from fewshot_lib.explore.render import attribute_probabilities

    for lab in labels:
        r = render_walk(space, list(seeds), d, lab.index, alphas)
        p, names = attribute_probabilities(extractor, space.synthesize(r.latents))
        j = names.index(lab.attribute)
        p = np.round(p.reshape(len(seeds), len(alphas), -1)[:, :, j] / 0.01) * 0.01
        rho = np.array([lab.sign * spearman(np.array(alphas, float), p[s]) for s in range(len(seeds))])
        assert np.allclose(rho, lab.rho, atol=1e-6)
        monotonic = (np.array(lab.rho) >= 0.8 - 1e-9).sum() >= 8
        assert lab.kept == monotonic
        assert lab.text == (
            f"d{lab.index}: {'+' if lab.sign > 0 else '−'}{lab.attribute.split(': ')[1]}"
            if lab.kept
            else f"d{lab.index}"
        )


def test_labels_from_the_emoji_network_are_monotonic_or_dropped(space):
    from fewshot_lib.metrics.features import emoji_extractor

    ex = emoji_extractor()
    for method, n in (("pca", 1), ("sefa", 1)):
        d = space.directions(method, 8)
        labels = label_directions(space, d, ex, n_label=n, select_seeds=range(1000, 1004))
        assert [lab.index for lab in labels] == list(range(n))
        assert all(lab.attribute.startswith(("style: ", "subcategory: ")) for lab in labels)
        assert all(len(lab.rho) == 10 for lab in labels)
        _check_rule(space, d, labels, ex, range(10))


def test_a_monotonic_attribute_keeps_its_label(space):
    # "brightness" as the attribute, and as direction the gradient of mean brightness with respect to w at w_avg
    w = space.w_avg.clone().requires_grad_(True)
    space.G(w, input_is_latent=True, noise=space._noise)[0].mean().backward()
    v = (w.grad / w.grad.norm()).detach()
    scale = ((space.w_samples - space.w_samples.mean(0)) @ v.T).std(0)
    d = Directions("brightness", torch.cat([v, -v]), torch.tensor([1.0, 1.0]), scale.repeat(2), (0, 8))
    labels = label_directions(space, d, _FakeExtractor(), alphas=(-1.5, -1, -0.5, 0, 0.5, 1, 1.5))
    assert [lab.kept for lab in labels] == [True, True], [lab.rho for lab in labels]
    assert [lab.text for lab in labels] == ["d0: +bright", "d1: −bright"]
    _check_rule(space, d, labels, _FakeExtractor(), range(10), alphas=(-1.5, -1, -0.5, 0, 0.5, 1, 1.5))


# -- your own image, export, checkpoints ------------------------------------------------------------------


def test_read_image_composites_crops_and_resizes(tmp_path):
    rgba = np.zeros((20, 30, 4), np.uint8)  # fully transparent → white
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    x = read_image(buf.getvalue(), 16)
    assert x.shape == (1, 3, 16, 16) and torch.allclose(x, torch.ones_like(x))
    p = tmp_path / "a.png"
    p.write_bytes(_png())
    assert read_image(p, 32, allowed_roots=[tmp_path]).shape == (1, 3, 32, 32)


@pytest.mark.parametrize(
    "source, words",
    [
        (b"GIF89a not really", "is not an image"),
        (b"", "empty"),
        (b"x" * (5 * 2**20), "at most 4 MiB"),
        (3, "unsupported input"),
    ],
)
def test_non_image_upload_is_a_clear_message(source, words):
    with pytest.raises(ExploreInputError, match=words):
        read_image(source, 32)


def test_paths_only_inside_the_allowed_folders(tmp_path):
    inside, outside = tmp_path / "in", tmp_path / "out"
    inside.mkdir(), outside.mkdir()
    (outside / "b.png").write_bytes(_png())
    with pytest.raises(ExploreInputError, match="outside the folders"):
        read_image(outside / "b.png", 32, allowed_roots=[inside])
    with pytest.raises(ExploreInputError, match="outside the folders"):
        read_image(inside / ".." / "out" / "b.png", 32, allowed_roots=[inside])
    with pytest.raises(ExploreInputError, match="no such file"):
        read_image(inside / "missing.png", 32, allowed_roots=[inside])


def test_project_then_edit_and_export(space):
    target = render_seeds(space, 42).images
    x = torch.from_numpy(target).permute(0, 3, 1, 2).float() / 127.5 - 1
    for kind, shape in (("w", (2, 8, space.style_dim)), ("w+", (2, 8, space.style_dim))):
        r = project_image(space, x, kind, steps=12)
        assert r.images.shape == (2, 32, 32, 3) and np.array_equal(r.images[0], target[0])
        assert tuple(r.latents.shape) == shape and np.isfinite(r.numbers["mse"]) and r.numbers["mse"] < 1.0
        assert torch.equal(r.latents[1, 0], r.latents[1, -1]) == (kind == "w")  # one w for every layer
    e = render_edit(space, None, "pca", [1.0], base=r.latents[1:])
    assert e.images.shape == (1, 32, 32, 3)
    for k, key, shp in (("w", "w", (space.style_dim,)), ("w+", "w_plus", (8, space.style_dim))):
        z = np.load(io.BytesIO(export_latent(e.latents, k, model="m")))
        assert z[key].shape == shp and str(z["meta_model"]) == "m"
    assert np.allclose(np.load(io.BytesIO(export_latent(e.latents, "w+")))["w_plus"], e.latents[0].numpy())
    with pytest.raises(ExploreInputError, match="'w\\+\\+'"):
        export_latent(e.latents, "w++")
    with pytest.raises(ExploreInputError, match=r"needs \[1, 3, 32, 32\]"):
        project_image(space, x[:, :, :16, :16])
    png = png_bytes(e.grid(), 2)
    assert Image.open(io.BytesIO(png)).size == (2 * 34, 2 * 34)


def test_load_own_checkpoint_both_formats(tmp_path, tiny):
    sg.export_generator(tiny, tmp_path / "mine.pt", half=False, n_mean=64)
    sg.save_rosinality(tmp_path / "rosinality.pt", tiny, latent_avg=tiny.mean_latent(64))
    for name in ("mine.pt", "rosinality.pt"):
        G = load_any_generator(tmp_path / name)
        assert G.size == 16 and G.style_dim == 16
        assert all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), tiny.state_dict().values()))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ExploreInputError, match="'junk.pt' cannot be read"):
        load_any_generator(tmp_path / "junk.pt")
    with pytest.raises(ExploreInputError, match="no such file"):
        load_any_generator(tmp_path / "none.pt")


# -- the widgets: bad input becomes a message, latest state wins ------------------------------------------


@pytest.fixture()
def session(space):
    return xw.Session(space, allowed_roots=[])


def test_widget_bad_seed_input_shows_a_message_not_a_traceback(session):
    e = xw.seeds_explorer(session, sync=True)
    good = e.image.value
    assert e.message.value.startswith("seeds 0…7") and good[:4] == b"\x89PNG"
    e.controls["seeds"].value = "zero"
    assert "fewshot-error" in e.message.value and "&#x27;zero&#x27; is not a whole number" in e.message.value
    assert e.image.value == good  # the last good picture stays
    e.controls["seeds"].value = "3"
    assert e.message.value.startswith("seed 3") and e.image.value != good


def test_widget_layer_range_outside_the_model(session):
    m = xw.mixing_explorer(session, sync=True)
    m.controls["layers"].max = 12
    m.controls["layers"].value = (2, 11)
    assert "outside this model" in m.message.value and "layers 0…7" in m.message.value
    m.controls["layers"].value = (3, 3)
    assert "no layers from B" in m.message.value


def test_widget_non_image_upload_and_forbidden_path(session, tmp_path):
    p = xw.projection_explorer(session, steps=10, sync=True)
    assert "no image projected yet" in p.message.value
    p.upload.value = (
        {
            "name": "notes.txt",
            "type": "text/plain",
            "size": 5,
            "content": memoryview(b"hello"),
            "last_modified": datetime.datetime.now(),
        },
    )
    p.project()
    assert "fewshot-error" in p.status.value and "not an image" in p.status.value
    p.upload.value = ()
    p.path.value = str(tmp_path / "x.png")
    (tmp_path / "x.png").write_bytes(_png())
    p.project()
    assert "outside the folders" in p.status.value
    (session.upload_dir / "x.png").write_bytes(_png())
    p.path.value = str(session.upload_dir / "x.png")
    p.project()
    assert "W projection" in p.status.value and "fewshot-error" not in p.message.value
    before = p.image.value
    p.controls["a0"].value = 2.0
    assert p.image.value != before


def test_widget_bad_checkpoint_is_a_message(session):
    loader = xw.model_loader(session, sync=True)
    loader.path.value = "/etc/hostname"
    loader.load()
    assert "outside the folders" in loader.status.value and loader.current.images.shape == (8, 32, 32, 3)
    if sg.source_model_available():  # a relative path is read from the repository root
        own = xw.Session(session.space)
        ok = xw.model_loader(own, sync=True)
        ok.path.value = "data/checkpoints/stylegan2_noto32.pt"
        ok.load()
        assert ok.status.value.startswith("loaded stylegan2_noto32.pt: 32 px, 8 layers"), ok.status.value
        assert own.space is not session.space and own.space.name == "stylegan2_noto32"


def test_latest_state_wins_and_changes_coalesce(session):
    e = xw.seeds_explorer(session, debounce_s=0.2)
    first = e.renders
    for v in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6):
        e.controls["psi"].value = v
    assert e.wait(30)
    assert e.renders - first <= 2  # six changes, at most two renders
    assert "ψ = 0.60" in e.message.value and e.current.numbers["psi"] == 0.6
    assert e.controls["psi"].continuous_update is False


def test_directions_explorer_labels_and_export(session):
    session.set_labels("pca", [])
    e = xw.directions_explorer(session, sync=True)
    assert [s.description for s in e.directions.sliders] == [f"d{i}" for i in range(8)]
    before = e.image.value
    e.controls["a0"].value = 2.5
    assert e.image.value != before and "0:+2.5" in e.message.value
    e.controls["method"].value = "sefa"
    assert "SEFA" in e.message.value
    e.controls["layers"].value = (4, 4)
    assert "empty layer range" in e.message.value
    row = e.widget.children[2].children[1].children[-2]
    row.children[1].click()  # export W+
    assert 'download="latent_wplus.npz"' in e.widget.children[2].children[1].children[-1].value


# -- serving: loopback only, token, capped kernels, culling, message cap ----------------------------------


def test_voila_command_is_safe_by_default():
    from fewshot_lib.explore.serve import voila_argv

    argv = " ".join(voila_argv("nb.ipynb", 9999, "tok", max_kernels=3, cull_idle_s=120, max_message_mib=2))
    for part in (
        "--Voila.ip=127.0.0.1",
        "--port=9999",
        "--Voila.token=tok",
        "CappedKernelManager.max_kernels=3",
        "cull_idle_timeout=120",
        "cull_interval=60",
        "cull_connected=True",
        "'websocket_max_message_size': 2097152",
        "show_tracebacks=False",
        "--no-browser",
    ):
        assert part in argv, part
    with pytest.raises(ValueError, match="loopback"):
        voila_argv("nb.ipynb", ip="0.0.0.0")


def test_kernel_cap_refuses_the_next_visitor():
    import asyncio

    from tornado import web

    from fewshot_lib.explore.serve import CappedKernelManager

    km = CappedKernelManager(max_kernels=0)
    with pytest.raises(web.HTTPError) as e:
        asyncio.run(km.start_kernel())
    assert e.value.status_code == 503 and "too many explorers" in e.value.log_message


# -- method explorers: CDC (adapted generators), LoFGAN (one fusion), LSO (magnitude) ---------------------

from fewshot_lib.explore import (  # noqa: E402
    AdaptedGenerators,
    episode_shots,
    heat_overlay,
    lofgan_similarity,
    read_anchors,
    render_adapted,
    render_fusion,
    render_magnitude,
    similarity_images,
    to_uint8,
)


def _perturbed(g, scale=0.3, seed=1):
    import copy

    out = copy.deepcopy(g)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen) * p.abs().mean())
    return out


@pytest.fixture(scope="module")
def adapted(tiny):
    anchors = torch.randn(3, tiny.style_dim, generator=torch.Generator().manual_seed(5))
    return AdaptedGenerators(
        {"source": tiny, "same": _perturbed(tiny, 0.0), "moved": _perturbed(tiny)}, anchors
    )


def test_cdc_the_same_latent_through_every_generator(tiny, adapted):
    r = render_adapted(adapted, "0-3", "elsewhere")
    assert r.images.shape == (12, 16, 16, 3) and r.nrow == 4
    z = torch.stack([torch.randn(16, generator=torch.Generator().manual_seed(s)) for s in range(4)])
    with torch.no_grad():
        want = tiny(tiny.mapping(z), input_is_latent=True, noise=tiny.noises.as_list())[0]
    assert np.array_equal(r.images[:4], to_uint8(want))  # row 1 = the source with its fixed noise
    assert np.array_equal(r.images[4:8], r.images[:4]) and r.numbers["change_from_source"]["same"] == 0
    assert r.numbers["change_from_source"]["moved"] > 1 and not np.array_equal(r.images[8:], r.images[:4])
    assert torch.equal(r.latents[0, 0], z[0]) and torch.equal(r.latents[8, 0], z[0])


def test_cdc_anchor_region_sits_near_the_anchors(adapted):
    z, idx = adapted.z([0, 1, 2, 3, 4], "anchor")
    assert idx == [0, 1, 2, 0, 1]
    eps = torch.randn(16, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(z[4], adapted.anchors[1] + 0.1 * eps)
    tight = AdaptedGenerators(adapted.generators, adapted.anchors, anchor_sigma=0.0)
    r = render_adapted(tight, [0, 3, 1], "anchor")  # seeds 0 and 3 share anchor 0; σ = 0: the same image
    assert np.array_equal(r.images[0], r.images[1]) and not np.array_equal(r.images[0], r.images[2])
    assert r.numbers["anchor_index"] == [0, 0, 1] and "near CDC's anchors" in r.caption
    far = render_adapted(adapted, [0, 3], "elsewhere")
    assert not np.array_equal(far.images[0], r.images[0])


def test_cdc_nearest_shot_distance_and_bad_input(tiny, adapted):
    src = render_adapted(adapted, "0-3").images[:4]  # the source row
    shots = torch.from_numpy(src).permute(0, 3, 1, 2).float() / 127.5 - 1
    with_shots = AdaptedGenerators(adapted.generators, adapted.anchors, shots=shots)
    d = render_adapted(with_shots, "0-3").numbers["nearest_shot"]
    assert (
        d["source"] < 0.6 and d["moved"] > d["source"]
    )  # the source's own images are the shots (± rounding)
    no_anchors = AdaptedGenerators({"source": tiny})
    with pytest.raises(ExploreInputError, match="without CDC's anchors"):
        render_adapted(no_anchors, "0-3", "anchor")
    with pytest.raises(ExploreInputError, match="region 'near'"):
        render_adapted(adapted, "0-3", "near")
    other = sg.Generator(32, style_dim=16, n_mlp=1, channel_base=32, channel_max=8)
    with pytest.raises(ExploreInputError, match="only generators adapted from it"):
        AdaptedGenerators({"source": tiny, "other": other})
    with pytest.raises(ExploreInputError, match=r"needs \[k, 16\]"):
        AdaptedGenerators({"source": tiny}, anchors=torch.zeros(3, 8))


def test_read_anchors_from_a_trainer_checkpoint_or_an_export(tmp_path, tiny):
    from fewshot_lib.checkpoint import save_atomic

    a = torch.randn(4, 16)
    save_atomic({"hook": {"anchors": a}, "step": 3}, tmp_path / "trainer.pt")
    assert torch.equal(read_anchors(tmp_path / "trainer.pt"), a)
    sg.export_generator(tiny, tmp_path / "g.pt", half=False, info={"cdc_anchors": a}, n_mean=16)
    assert torch.equal(read_anchors(tmp_path / "g.pt"), a)
    sg.export_generator(tiny, tmp_path / "plain.pt", half=False, n_mean=16)
    assert read_anchors(tmp_path / "plain.pt") is None
    (tmp_path / "junk.pt").write_bytes(b"nope")
    with pytest.raises(ExploreInputError, match="cannot be read"):
        read_anchors(tmp_path / "junk.pt")


@pytest.fixture(scope="module")
def lofgan():
    from fewshot_lib.models.lofgan import LoFGANGenerator

    torch.manual_seed(0)
    return LoFGANGenerator(size=16, feature_size=4, nf=4).eval()


@pytest.fixture(scope="module")
def pool():
    return torch.rand(7, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1


def test_lofgan_fusion_is_the_generators_own(lofgan, pool):
    shots = episode_shots(pool, 1)
    assert torch.equal(shots, pool[3:6])
    r = render_fusion(lofgan, shots, base=1, eta=0.5, seed=7, position=(1, 2))
    assert r.images.shape == (8, 16, 16, 3) and r.nrow == 4
    with torch.no_grad():
        fake, rec = lofgan(
            shots[None], rate=0.5, base_index=torch.tensor([1]), generator=torch.Generator().manual_seed(7)
        )
    assert np.array_equal(r.images[3], to_uint8(fake)[0])  # the fused sample
    assert r.numbers["selected"] == 8 and sorted(r.numbers["selected_positions"]) == sorted(
        rec.positions[0].tolist()
    )
    assert torch.allclose(torch.tensor(r.numbers["alpha"]), rec.alpha[0])
    assert (r.images[1][0] == (230, 25, 25)).all() and not (
        r.images[0][0] == (230, 25, 25)
    ).all()  # base framed
    # the local reconstruction target, upscaled, is the last image
    from fewshot_lib.methods.lofgan import local_target

    t = to_uint8(local_target(shots[None], rec))[0]
    assert np.array_equal(r.images[7], t.repeat(4, 0).repeat(4, 1))


def test_lofgan_similarity_maps_agree_with_the_fusions_matches(lofgan, pool):
    shots = pool[:3]
    with torch.no_grad():
        _, rec = lofgan(
            shots[None], rate=0.75, base_index=torch.tensor([2]), generator=torch.Generator().manual_seed(1)
        )
    positions = rec.positions[0].tolist()
    sim = lofgan_similarity(lofgan, shots, 2, positions)  # [k-1, P, N]
    assert sim.shape == (2, len(positions), 16) and sim.abs().max() <= 1 + 1e-5
    assert torch.equal(sim.argmax(-1), rec.ref_positions[0])  # the LFM's matches are the maps' maxima
    p = positions[0]
    r = render_fusion(lofgan, shots, base=2, eta=0.75, seed=1, position=divmod(p, 4))
    assert r.numbers["position_selected"] and "was selected" in r.caption
    want = {j: divmod(int(rec.ref_positions[0, i, 0]), 4) for i, j in enumerate((0, 1))}
    assert r.numbers["best_match"] == want
    imgs = similarity_images(shots, 2, sim, positions, 4)
    assert imgs.shape == (len(positions), 3, 16, 16, 3) and imgs.dtype == np.uint8


def test_lofgan_eta_zero_decodes_the_base_alone(lofgan, pool):
    shots = pool[:3]
    r = render_fusion(lofgan, shots, base=0, eta=0.0, seed=3)
    with torch.no_grad():
        alone = lofgan.decoder(lofgan.encode(shots[None])[:, 0])
    assert r.numbers["selected"] == 0 and np.array_equal(r.images[3], to_uint8(alone)[0])
    assert "0 of 16 positions" in r.caption and not r.numbers["position_selected"]


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(base=3), "base shot 3"),
        (dict(base=True), "base shot True"),
        (dict(eta=1.5), r"η \(selection rate\)"),
        (dict(position=(4, 0)), "outside the 4×4 feature map"),
        (dict(position="x"), "not a pair"),
        (dict(seed="abc"), "seeds"),
    ],
)
def test_lofgan_bad_input_is_a_clear_message(lofgan, pool, kwargs, words):
    with pytest.raises(ExploreInputError, match=words):
        render_fusion(lofgan, pool[:3], **kwargs)


def test_lofgan_bad_shots_and_episodes(lofgan, pool):
    with pytest.raises(ExploreInputError, match="needs a base and at least one reference"):
        render_fusion(lofgan, pool[:1])
    with pytest.raises(ExploreInputError, match=r"needs \[k, 3, 16, 16\]"):
        render_fusion(lofgan, pool[:3, :, :8, :8])
    with pytest.raises(ExploreInputError, match="2 episodes of 3 shots"):
        episode_shots(pool, 2)


def test_heat_overlay_colours_high_red_low_blue():
    white = np.full((8, 8, 3), 255, np.uint8)
    out = heat_overlay(white, np.array([[1.0, -1.0], [0.0, 0.0]]), alpha=1.0)
    assert out.shape == (8, 8, 3)
    assert out[0, 0, 0] > 100 and out[0, 0, 2] < 50  # +1: red (jet's top end is dark red)
    assert out[0, 7, 2] > 100 and out[0, 7, 0] < 50  # −1: blue


@pytest.fixture(scope="module")
def cond():
    torch.manual_seed(0)
    return sg.Generator(16, style_dim=16, n_mlp=2, channel_base=64, channel_max=16, c_dim=3).eval()


def test_magnitude_zero_is_the_centroid_and_samples_follow_the_mapping(cond):
    names = ["a", "b", "c"]
    r0 = render_magnitude(cond, "b", 0.0, "0-3", names)
    assert r0.images.shape == (5, 16, 16, 3) and all(np.array_equal(im, r0.images[0]) for im in r0.images)
    assert r0.numbers["w_distance"] == 0 and r0.numbers["class_index"] == 1
    r = render_magnitude(cond, 1, 0.6, "0-3", names)
    assert np.array_equal(r.images[0], r0.images[0])  # the centroid does not depend on σ
    z = torch.randn(16, generator=torch.Generator().manual_seed(2))[None]
    with torch.no_grad():
        w = cond.mapping(z, torch.tensor([1]), magnitude=0.6)
        want = cond(w, input_is_latent=True, noise=cond.noises.as_list())[0]
    assert np.array_equal(r.images[3], to_uint8(want)[0]) and torch.allclose(r.latents[3, 0], w[0])
    d = [render_magnitude(cond, 1, s, "0-3").numbers["w_distance"] for s in (0.0, 0.3, 0.6, 1.0)]
    assert d == sorted(d) and d[0] == 0 < d[1]
    assert not np.array_equal(render_magnitude(cond, 2, 0.6, "0-3").images, r.images)
    assert r.caption.startswith("b: centroid")


def test_magnitude_bad_input(cond, tiny):
    with pytest.raises(ExploreInputError, match="unconditional"):
        render_magnitude(tiny, 0)
    with pytest.raises(ExploreInputError, match="'zzz' is not one of"):
        render_magnitude(cond, "zzz", 0.5, "0", ["a", "b", "c"])
    with pytest.raises(ExploreInputError, match=r"classes 0…2"):
        render_magnitude(cond, 3)
    with pytest.raises(ExploreInputError, match="magnitude σ"):
        render_magnitude(cond, 0, -0.1)


def test_method_widgets_react_and_show_messages(adapted, lofgan, pool, cond):
    c = xw.cdc_explorer(adapted, seeds="0-3", sync=True)
    before = c.image.value
    c.controls["region"].value = "anchor"
    assert c.image.value != before and "near CDC's anchors" in c.message.value
    c.controls["seeds"].value = "x"
    assert "fewshot-error" in c.message.value
    bare = xw.cdc_explorer(AdaptedGenerators({"source": adapted.generators["source"]}), sync=True)
    assert bare.controls["region"].disabled and bare.controls["region"].value == "elsewhere"
    f = xw.lofgan_explorer(lofgan, {"one": pool, "two": pool.flip(0)}, sync=True)
    before = f.image.value
    f.controls["eta"].value = 1.0
    assert f.image.value != before and "16 of 16 positions" in f.message.value
    f.controls["cls"].value = "two"
    assert f.message.value.startswith("two, episode 0")
    f.controls["episode"].value = 1
    assert "episode 1" in f.message.value and f.controls["episode"].max == 1
    m = xw.magnitude_explorer(cond, ["a", "b", "c"], sync=True)
    before = m.image.value
    m.controls["sigma"].value = 0.0
    assert m.image.value != before and "σ = 0.00" in m.message.value
    m.controls["seeds"].value = "-1"
    assert "fewshot-error" in m.message.value
