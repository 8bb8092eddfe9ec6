import math

import pytest
import torch
from torch.autograd import gradcheck

from copyseek.attack import losses as L
from copyseek.errors import CopyseekError


def rand(*shape, low=0.0, high=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(*shape, generator=g, dtype=torch.float64) * (high - low) + low).requires_grad_(True)


class TestFunctionsGradcheck:
    """Every function a loss piece is made of has the gradient its finite differences say (float64)."""

    def test_cosine_distance(self):
        assert gradcheck(L.cosine_distance, (rand(2, 5), rand(2, 5, seed=1)))

    @pytest.mark.parametrize("p", [1.0, 3.0, math.inf])
    def test_gem_pool(self, p):
        # distinct values, so that max pooling has one arg-max per channel (differentiable there)
        assert gradcheck(lambda x: L.gem_pool(x, p), (rand(2, 3, 3, 4, low=0.1),))

    def test_soft_histogram(self):
        centers = torch.linspace(0, 1, 5, dtype=torch.float64)
        assert gradcheck(lambda x: L.soft_histogram(x, centers, 0.2), (rand(1, 2, 3, 3),))

    def test_histogram_distance(self):
        assert gradcheck(L.histogram_distance, (rand(2, 3, 4), rand(2, 3, 4, seed=1)))

    def test_tensor_distance(self):
        assert gradcheck(L.tensor_distance, (rand(2, 3, 2, 2), rand(2, 3, 2, 2, seed=1)))

    def test_pixel_distance(self):
        assert gradcheck(L.pixel_distance, (rand(1, 3, 4, 4), rand(1, 3, 4, 4, seed=1)))

    def test_ssim_index(self):
        assert gradcheck(L.ssim_index, (rand(1, 1, 11, 12), rand(1, 1, 11, 12, seed=1)))


@pytest.mark.parametrize("name", sorted(L.LOSSES))
class TestEveryRegisteredLoss:
    """The contract of every registered piece: a scalar, zero-ish at its own reference, positive
    elsewhere, and a correct gradient in float64."""

    def inputs(self, loss, seed):
        if loss.space == "descriptor":
            return rand(2, 6, low=-1, seed=seed)
        if loss.space == "activations":
            return rand(2, 3, 4, 5, seed=seed)
        return rand(1, 1, 11, 11, seed=seed)

    def test_contract(self, name):
        loss = L.make_loss(name)
        x, y = self.inputs(loss, 0), self.inputs(loss, 1)
        reference = loss.reference(y)
        value = loss(x, reference)
        assert value.ndim == 0 and torch.isfinite(value)
        assert float(loss(y.detach(), reference)) < 1e-4 < float(value.detach())

    def test_gradcheck(self, name):
        loss = L.make_loss(name)
        reference = loss.reference(self.inputs(loss, 1).detach())
        assert gradcheck(lambda x: loss(x, reference), (self.inputs(loss, 0),))


class TestValues:
    def test_gem_pool_special_cases(self):
        x = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]]]])
        assert L.gem_pool(x, 1).item() == pytest.approx(3.0)
        assert L.gem_pool(x, math.inf).item() == pytest.approx(6.0)
        assert L.gem_pool(x, 3).item() == pytest.approx(((1 + 8 + 27 + 216) / 4) ** (1 / 3))

    def test_soft_histogram_is_a_distribution_that_follows_the_values(self):
        centers = torch.linspace(0, 1, 11)
        low, high = torch.full((1, 1, 2, 2), 0.1), torch.full((1, 1, 2, 2), 0.9)
        h_low, h_high = L.soft_histogram(low, centers, 0.05), L.soft_histogram(high, centers, 0.05)
        assert torch.allclose(h_low.sum(-1), torch.ones(1, 1))
        assert h_low.argmax().item() == 1 and h_high.argmax().item() == 9

    def test_ssim_of_identical_is_one_and_noise_lowers_it(self):
        x = torch.linspace(0.2, 0.8, 16, dtype=torch.float64).expand(1, 3, 16, 16)  # a smooth ramp: noise shows on it
        noisy = (x + 0.2 * (rand(1, 3, 16, 16, seed=3).detach() - 0.5)).clamp(0, 1)
        assert L.ssim_index(x, x).item() == pytest.approx(1.0)
        assert L.ssim_index(x, noisy).item() < 0.9

    def test_tensor_loss_refuses_other_shapes(self):
        loss = L.TensorLoss()
        with pytest.raises(CopyseekError, match="equal shape"):
            loss(torch.rand(1, 3, 4, 4), loss.reference(torch.rand(1, 3, 5, 5)))


class TestSpecs:
    def test_parse_weights(self):
        terms = L.parse_loss("global+pooling@0.5+carrier@10")
        assert [(name, weight) for name, _, weight in terms] == [("global", 1.0), ("pooling", 0.5), ("carrier", 10.0)]
        assert isinstance(terms[1][1], L.PoolingLoss)

    @pytest.mark.parametrize("spec, message", [
        ("nope", "unknown attack loss 'nope'"), ("global@-1", "WEIGHT > 0"), ("global@x", "WEIGHT > 0"),
        ("global+global", "twice"), ("carrier", "no term on the model"), ("ssim@2", "no term on the model"),
    ])
    def test_bad_specs(self, spec, message):
        with pytest.raises(CopyseekError, match=message):
            L.parse_loss(spec)

    def test_register_loss_by_object_or_lazy_name(self):
        class Half(L.DescriptorLoss):
            def __call__(self, x, reference):
                return 0.5 * super().__call__(x, reference)

        L.register_loss("half-global", Half)
        L.register_loss("half-global", Half)  # the same piece again: fine
        L.register_loss("lazy-tensor", "copyseek.attack.losses:TensorLoss")
        try:
            assert isinstance(L.parse_loss("half-global")[0][1], Half)
            assert isinstance(L.parse_loss("lazy-tensor")[0][1], L.TensorLoss)
            with pytest.raises(CopyseekError, match="already registered"):
                L.register_loss("half-global", L.DescriptorLoss)
        finally:
            del L.LOSSES["half-global"], L.LOSSES["lazy-tensor"]

    def test_register_refuses_bad_pieces(self):
        with pytest.raises(CopyseekError, match="without spaces"):
            L.register_loss("a+b", L.DescriptorLoss)
        with pytest.raises(CopyseekError, match="factory"):
            L.register_loss("odd", 3)
        L.register_loss("spaceless", object)
        try:
            with pytest.raises(CopyseekError, match="space"):
                L.make_loss("spaceless")
        finally:
            del L.LOSSES["spaceless"]
