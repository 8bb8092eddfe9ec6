import pytest

from copyseek.distributed.cluster import plan_pool
from copyseek.errors import CopyseekError


@pytest.mark.parametrize("nodes", [[1.0], [2.0], [4.0], [2.0, 8.0], [16.0] * 5])
@pytest.mark.parametrize("workers", [None, 1, 2, 7])
def test_the_actors_never_reserve_every_cpu(nodes, workers):
    pool = plan_pool(nodes, workers)
    reserved = pool.workers * pool.cpus_per_worker
    assert reserved + pool.decode_cpus <= sum(nodes) + 1e-9
    assert pool.decode_cpus > 0 and pool.cpus_per_worker > 0 and pool.threads >= 1
    if workers:
        assert pool.workers == workers


def test_default_pool_is_one_one_thread_actor_per_cpu():
    assert plan_pool([2.0]).workers == 2 and plan_pool([2.0]).threads == 1
    assert plan_pool([4.0, 4.0]).workers == 8 and plan_pool([4.0, 4.0]).threads == 1
    assert plan_pool([1.0]).workers == 1 and plan_pool([1.0]).cpus_per_worker == 0.5
    assert plan_pool([8.0], workers=2, threads=3).threads == 3


def test_bad_pools_are_refused():
    with pytest.raises(CopyseekError, match="no CPUs"):
        plan_pool([0.0])
    with pytest.raises(CopyseekError, match="ray workers must be an integer >= 1"):
        plan_pool([2.0], workers=0)
