import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded_and_few_threads():
    # Deterministic, and cheap on the 2-core CI machine.
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    yield
    torch.set_num_threads(threads)
