import copy

import pytest
import torch
import torch.nn.functional as F

from copyseek.errors import CopyseekError
from copyseek.learn.chunked import chunked_backward
from copyseek.learn.losses import Contrastive, Distill, RecallAtK, SiMix, WeightedSum
from tests.learn.tiny import tiny_model

N, SIZE, DIM = 24, 32, 16


def batch():
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (N, 3, SIZE, SIZE), dtype=torch.uint8, generator=g)
    labels = torch.arange(N // 4).repeat_interleave(4)
    teacher = F.normalize(torch.randn(N, DIM, generator=g, dtype=torch.float64), dim=1)
    return images, labels, teacher


def gradients(model):
    return [p.grad.clone() for p in model.parameters()]


def full_batch_gradients(model, images, loss_fn):
    model.zero_grad()
    loss = loss_fn(model(images))
    loss.backward()
    return loss.item(), gradients(model)


LOSSES = {
    "recall@k": lambda: RecallAtK(ks=(1, 2, 4)),
    "recall@k+simix": lambda: RecallAtK(ks=(1, 2, 4), mixer=SiMix(generator=torch.Generator().manual_seed(7))),
    "contrastive": lambda: Contrastive(),
    "distill+recall@k": lambda: WeightedSum([(1.0, Distill()), (1.0, RecallAtK(mixer=SiMix(max_mixes=10)))]),
}


@pytest.mark.parametrize("arch, loss_name", [("resnet", name) for name in sorted(LOSSES)] + [("vit", "recall@k+simix")])
def test_chunked_gradient_equals_full_batch_gradient(arch, loss_name):
    images, labels, teacher = batch()
    # float64 so that the comparison is about the method, not float32 summation order; eval mode
    # so that BatchNorm treats each image independently of its chunk.
    model = tiny_model(arch, DIM, SIZE).double().eval()

    def loss_fn(embeddings):
        torch.manual_seed(11)  # the same SiMix draws on both paths
        return LOSSES[loss_name]()(embeddings, labels, teacher)

    full_loss, expected = full_batch_gradients(model, images, loss_fn)
    model.zero_grad()
    result = chunked_backward(model, images, loss_fn, chunk_size=5)
    assert result.loss == pytest.approx(full_loss, rel=1e-10)
    assert result.embeddings.shape == (N, DIM)
    for got, want in zip(gradients(model), expected):
        assert torch.allclose(got, want, rtol=1e-7, atol=1e-10)


def test_chunked_gradient_matches_in_float32_too():
    images, labels, _ = batch()
    model = tiny_model("resnet", DIM, SIZE).eval()
    loss = RecallAtK(mixer=SiMix(generator=torch.Generator().manual_seed(0)))

    def loss_fn(embeddings):
        loss.mixer.generator.manual_seed(0)
        return loss(embeddings, labels)

    _, expected = full_batch_gradients(model, images, loss_fn)
    model.zero_grad()
    chunked_backward(model, images, loss_fn, chunk_size=7)
    for got, want in zip(gradients(model), expected):
        assert torch.allclose(got, want, rtol=1e-3, atol=1e-6)


def test_batchnorm_statistics_count_each_chunk_once():
    # The graph-free pass must leave no trace: running statistics as after one plain pass over the chunks.
    images, labels, _ = batch()
    model = tiny_model("resnet", DIM, SIZE).train()
    reference = copy.deepcopy(model)
    chunked_backward(model, images, lambda e: RecallAtK()(e, labels), chunk_size=N // 3)
    for chunk in images.split(N // 3):
        reference(chunk)
    for key, value in reference.state_dict().items():
        if "running" in key or "num_batches" in key:
            assert torch.allclose(model.state_dict()[key].double(), value.double()), key


def test_chunk_size_is_validated():
    images, labels, _ = batch()
    model = tiny_model("resnet", DIM, SIZE)
    with pytest.raises(CopyseekError, match="chunk size"):
        chunked_backward(model, images, lambda e: RecallAtK()(e, labels), chunk_size=0)
