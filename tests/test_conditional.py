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
