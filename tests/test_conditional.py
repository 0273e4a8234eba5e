"""Class conditioning pieces of the conditional StyleGAN2 (LSO's base)."""

import pytest
import torch

from fewshot_lib.models.conditional import ClassEmbedding, check_class_indices, normalize_2nd_moment


def test_normalize_2nd_moment_gives_unit_rms_and_keeps_zero_rows():
    x = torch.randn(4, 16) * 5
    y = normalize_2nd_moment(x)
    assert torch.allclose(y.square().mean(1), torch.ones(4), atol=1e-5)
    assert torch.equal(normalize_2nd_moment(torch.zeros(2, 16)), torch.zeros(2, 16))


def test_class_embedding_routes_classes_and_adding_one_keeps_the_others_bit_identical():
    torch.manual_seed(0)
    emb = ClassEmbedding(5, 8)
    c = torch.tensor([0, 1, 4, 4])
    before = emb(c)
    assert (
        before.shape == (4, 8) and not torch.equal(before[0], before[1]) and torch.equal(before[2], before[3])
    )
    new = emb.add_class(torch.Generator().manual_seed(1))
    assert new == 5 and emb.n_classes == 6 and float(emb.gain) == pytest.approx(1 / 5**0.5)
    assert torch.equal(emb(c), before)  # seen classes unchanged, bit for bit
    assert not torch.equal(emb(torch.tensor([5])), emb(torch.tensor([4])))
    assert any(p is emb.weight for p in emb.parameters())  # the grown table is still a trained parameter


def test_class_indices_are_checked_with_clear_errors():
    with pytest.raises(ValueError, match="class-conditional"):
        check_class_indices(None, 3, 2)
    with pytest.raises(ValueError, match="int64"):
        check_class_indices(torch.zeros(2, 3), 3, 2)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        check_class_indices(torch.tensor([0, 3]), 3, 2)
    with pytest.raises(ValueError, match="batch of 3"):
        check_class_indices(torch.tensor([0, 1]), 3, 3)
    with pytest.raises(ValueError, match="n_classes"):
        ClassEmbedding(0, 4)


def small_conditional(c_dim=4):
    from fewshot_lib.models.stylegan2 import Discriminator, Generator

    torch.manual_seed(0)
    G = Generator(16, style_dim=16, n_mlp=2, channel_base=64, channel_max=16, c_dim=c_dim)
    D = Discriminator(16, channel_base=64, channel_max=16, c_dim=c_dim)
    return G, D


def test_conditional_mapping_routes_classes_and_magnitude_zero_is_the_centroid():
    G, D = small_conditional()
    z = torch.randn(6, 16, generator=torch.Generator().manual_seed(1))
    same, other = torch.zeros(6, dtype=torch.long), torch.tensor([0, 1, 2, 3, 0, 1])
    w = G.mapping(z, other)
    assert not torch.allclose(w[0], w[1]) and w.shape == (6, 16)
    centroid = G.mapping(z, same, magnitude=0.0)  # σ = 0: z no longer matters
    assert torch.allclose(centroid, centroid[:1].expand_as(centroid), atol=1e-6)
    half = G.mapping(z, same, magnitude=torch.full((6,), 0.5))
    assert not torch.allclose(half, centroid)
    img = G(z, c=other, randomize_noise=False)[0]
    logits = D(img, other)
    assert logits.shape == (6, 1) and not torch.allclose(D(img, same), logits)
    assert D.trunk(img).shape == (6, 16 * 16)
    with pytest.raises(ValueError, match="class-conditional"):
        G.mapping(z)  # a conditional G needs c
    with pytest.raises(ValueError, match="unconditional"):
        D.__class__(16, channel_base=64, channel_max=16)(img, other)


def test_adding_a_class_keeps_seen_outputs_bit_identical_and_survives_export(tmp_path):
    from fewshot_lib.models.stylegan2 import export_generator, load_generator

    G, D = small_conditional()
    z = torch.randn(4, 16, generator=torch.Generator().manual_seed(2))
    c = torch.tensor([0, 1, 2, 3])
    before_img, before_d = G(z, c=c, randomize_noise=False)[0], D(G(z, c=c, randomize_noise=False)[0], c)
    assert G.add_class() == 4 and D.add_class() == 4 and G.config["c_dim"] == 5
    after = G(z, c=c, randomize_noise=False)[0]
    assert torch.equal(after, before_img) and torch.equal(D(after, c), before_d)
    new = G(z, c=torch.full((4,), 4), randomize_noise=False)[0]
    assert not torch.allclose(new, after)
    export_generator(G, tmp_path / "g.pt", half=False)
    G2 = load_generator(tmp_path / "g.pt")
    assert G2.c_dim == 5 and torch.equal(G2(z, c=c, randomize_noise=False)[0], after)


def test_the_trainer_trains_a_conditional_pair_and_resumes_it_exactly(tmp_path):
    from fewshot_lib.train import GANTrainer, TrainConfig

    images = torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    labels = torch.arange(12) % 4
    cfg = TrainConfig(
        steps=4, batch=4, r1_every=2, pl_every=2, sample_every=0, checkpoint_every=2, n_sample=8
    )

    def trainer(run_dir=None):
        G, D = small_conditional()
        return GANTrainer(G, D, images, cfg, run_dir=run_dir, labels=labels)

    straight = trainer()
    straight.train(show_progress=False)
    half = trainer(tmp_path / "a")
    half.train(steps=2, show_progress=False)
    half.save()
    resumed = trainer(tmp_path / "a")
    resumed.train(show_progress=False)  # resumes from step 2
    assert resumed.step == 4
    assert all(
        torch.equal(a, b) for a, b in zip(straight.G.state_dict().values(), resumed.G.state_dict().values())
    )
    assert straight.sample_images().shape == (8, 3, 16, 16)
    G, D = small_conditional()
    with pytest.raises(ValueError, match="pass labels"):
        GANTrainer(G, D, images, cfg)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        GANTrainer(G, D, images, cfg, labels=labels + 1)
    from fewshot_lib.models.stylegan2 import Discriminator, Generator

    with pytest.raises(ValueError, match="unconditional"):
        GANTrainer(
            Generator(16, style_dim=16, n_mlp=2, channel_base=64, channel_max=16),
            Discriminator(16, channel_base=64, channel_max=16),
            images,
            cfg,
            labels=labels,
        )


def test_the_class_count_comes_from_the_table_however_a_class_was_added(tmp_path):
    """LSO reads ``n_seen = G.c_dim`` and rebuilds models from ``config``: both must follow the table, also when
    a class is appended through the table itself (no stale ``c_dim`` that would rebuild the wrong shape)."""
    from fewshot_lib.models.stylegan2 import (
        Discriminator,
        export_generator,
        load_generator,
        validate_discriminator_config,
    )

    G, D = small_conditional()
    G.class_embed.add_class()  # bypasses Generator.add_class on purpose
    D.class_embed.add_class()
    assert G.c_dim == G.config["c_dim"] == 5 and D.c_dim == D.config["c_dim"] == 5
    export_generator(G, tmp_path / "g.pt", half=False)
    assert load_generator(tmp_path / "g.pt").c_dim == 5
    D2 = Discriminator(**validate_discriminator_config(D.config))
    D2.load_state_dict(D.state_dict())  # the config rebuilds the grown table's shape
    assert D2.c_dim == 5
    G.add_class()
    assert G.c_dim == G.config["c_dim"] == 6 and D.c_dim == 5
    unconditional = small_conditional(c_dim=0)[0]
    assert unconditional.c_dim == 0 and "c_dim" not in unconditional.config


def quadrant_classes(n_per: int = 24, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A toy labelled set where the class decides one obvious thing: class c lights quadrant c (row-major) of a
    black image, with a random colour and brightness per image (so each class still varies).
    → images ``[4·n_per, 3, size, size]`` in [-1, 1], labels ``[4·n_per]``."""
    gen = torch.Generator().manual_seed(seed)
    h = size // 2
    images = torch.full((4 * n_per, 3, size, size), -1.0)
    labels = torch.arange(4).repeat_interleave(n_per)
    level = torch.rand(4 * n_per, 3, 1, 1, generator=gen) * 1.2 - 0.2  # lit pixels in [-0.2, 1]
    for i, c in enumerate(labels.tolist()):
        r, col = divmod(c, 2)
        images[i, :, r * h : (r + 1) * h, col * h : (col + 1) * h] = level[i]
    return images, labels


def brightest_quadrant(x: torch.Tensor) -> torch.Tensor:
    """``[B, 3, S, S]`` → the index ``[B]`` of the quadrant with the highest mean (row-major, as the labels)."""
    h = x.shape[-1] // 2
    quads = [x[..., r * h : (r + 1) * h, c * h : (c + 1) * h].mean((1, 2, 3)) for r in (0, 1) for c in (0, 1)]
    return torch.stack(quads, 1).argmax(1)


@torch.no_grad()
def class_accuracy(G, n_per: int = 48) -> float:
    """Share of G's samples for class c whose lit quadrant is c's (chance 0.25)."""
    z = torch.randn(4 * n_per, G.style_dim, generator=torch.Generator().manual_seed(5))
    c = torch.arange(4).repeat_interleave(n_per)
    return (brightest_quadrant(G(z, c=c, randomize_noise=False)[0]) == c).float().mean().item()


def test_the_trainer_learns_the_conditioning_on_a_toy_set_where_the_class_decides_the_quadrant():
    """End to end through GANTrainer(labels=...): after 200 steps (≈ 30 s on one core) the samples drawn for class
    c light c's quadrant. This fails if anything on the label path is broken — fakes judged with classes other
    than the ones they were drawn with, reals with the wrong labels, a mapping or projection that drops c, style
    mixing that mixes classes — because the classes then carry no information for G (measured: with shuffled
    labels the same run stays at 0.32; chance is 0.25; the working path reaches 0.95)."""
    from fewshot_lib.models.stylegan2 import Discriminator, Generator
    from fewshot_lib.train import GANTrainer, TrainConfig

    images, labels = quadrant_classes()
    assert (brightest_quadrant(images) == labels).all()  # the measure reads the class off a real image
    torch.manual_seed(0)
    G = Generator(16, style_dim=32, n_mlp=2, channel_base=128, channel_max=32, c_dim=4)
    D = Discriminator(16, channel_base=128, channel_max=32, c_dim=4)
    cfg = TrainConfig(
        steps=200, batch=16, r1_gamma=0.1, pl_weight=0, mixing=0.9, augment=None, ema_half_life_images=500
    )
    trainer = GANTrainer(G, D, images, cfg, labels=labels)
    before = class_accuracy(trainer.g_ema)
    trainer.train(show_progress=False)
    after = class_accuracy(trainer.g_ema)
    assert before < 0.45, (
        f"the untrained generator already follows the class ({before:.2f}): the toy is too easy"
    )
    assert after >= 0.8, (
        f"class accuracy {before:.2f} → {after:.2f} after 200 steps: the conditioning did not learn"
    )


def test_class_balanced_sampling_draws_every_class_equally_often_for_reals_and_fakes():
    """The seen emoji classes range from 10 to 259 images; drawn like the data, a 10-image class gets 1/26 of a
    flag class's updates and its samples stay unlearnt (issue #17). ``class_balanced`` evens the classes out."""
    from fewshot_lib.train import GANTrainer, TrainConfig

    images = torch.zeros(100, 3, 16, 16)
    labels = torch.tensor([0] * 90 + [1] * 8 + [2] * 2)  # 90 / 8 / 2 images

    def shares(balanced: bool) -> tuple[torch.Tensor, torch.Tensor]:
        G, D = small_conditional(c_dim=3)
        trainer = GANTrainer(G, D, images, TrainConfig(batch=50), labels=labels, class_balanced=balanced)
        real = torch.cat([(trainer.real_batch(), trainer.real_c)[1] for _ in range(60)])
        fake = torch.cat([trainer.fake_classes(50) for _ in range(60)])
        return torch.bincount(real, minlength=3) / len(real), torch.bincount(fake, minlength=3) / len(fake)

    for share in shares(balanced=True):
        assert torch.allclose(share, torch.full((3,), 1 / 3), atol=0.04)
    for share in shares(balanced=False):  # the default: as often as a class has images
        assert torch.allclose(share, torch.tensor([0.90, 0.08, 0.02]), atol=0.03)
    G, D = small_conditional(c_dim=0)
    with pytest.raises(ValueError, match="needs labels"):
        GANTrainer(G, D, images, TrainConfig(batch=4), class_balanced=True)
