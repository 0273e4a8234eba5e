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
    assert before.shape == (4, 8) and not torch.equal(before[0], before[1]) and torch.equal(before[2], before[3])
    new = emb.add_class(torch.Generator().manual_seed(1))
    assert new == 5 and emb.n_classes == 6 and emb.gain == pytest.approx(1 / 5 ** 0.5)
    assert torch.equal(emb(c), before)                         # seen classes unchanged, bit for bit
    assert not torch.equal(emb(torch.tensor([5])), emb(torch.tensor([4])))
    assert any(p is emb.weight for p in emb.parameters())      # the grown table is still a trained parameter


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
