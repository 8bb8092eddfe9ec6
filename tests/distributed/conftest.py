"""One local Ray for every Ray test of a run (starting one takes seconds): the tests that use it
carry the `ray` xdist group, so that with `pytest -n 2 --dist loadgroup` one worker runs them all."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_address() -> str:
    """The address of a local Ray cluster this test process is connected to."""
    pytest.importorskip("ray")
    from copyseek.distributed.cluster import connect

    ray = connect(None)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
