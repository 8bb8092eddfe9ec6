import numpy as np
import pytest
import torch

from copyseek.attack.models import DescriptorModel
from copyseek.learn.models import GeM, Descriptor, ResNet


@pytest.fixture(autouse=True)
def _seeded_and_one_thread():
    # Deterministic, and cheap on the shared 2-core machine.
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_descriptor(seed: int = 0) -> Descriptor:
    """A randomly initialised ResNet descriptor small enough for a few attack steps in a test, with
    non-trivial BatchNorm statistics (as a trained model has)."""
    torch.manual_seed(seed)
    model = Descriptor(ResNet((8, 16), (1, 1), stem=8), GeM(), 16)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.1, 0.1)
    return model.eval()


@pytest.fixture
def tiny_model() -> DescriptorModel:
    return DescriptorModel(tiny_descriptor(), "tiny", 64)


@pytest.fixture
def pictures() -> tuple[np.ndarray, np.ndarray]:
    """(target, carrier): two different (48, 56, 3) uint8 pictures with structure (gradients and blocks)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:56]
    target = np.stack([x * 4, y * 5, (x + y) * 2], axis=2) % 256
    carrier = np.zeros((48, 56, 3)) + rng.integers(0, 256, 3)
    carrier[10:30, 20:45] = rng.integers(0, 256, 3)
    noise = rng.normal(0, 8, (2, 48, 56, 3))
    return tuple(np.clip(img + n, 0, 255).astype(np.uint8) for img, n in zip((target, carrier), noise))
