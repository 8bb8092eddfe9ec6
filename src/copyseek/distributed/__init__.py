"""Many machines: describing references on a Ray cluster, and searching an index split into shards.

- `indexing.RayDescriber`: `Index.add(..., describer=RayDescriber(...))` (`copyseek index --ray`)
  decodes and describes images in a Ray Data pipeline, and the driver commits them through the
  index's own crash-safe chunk protocol, so the index is the one a single process makes.
- `shards.ShardedSearchers`: an index's rows split into shards by chunk, each held by a worker
  (in this process, a separate process or a Ray actor), results merged exactly as one searcher's
  (`copyseek match --shards N`).

Ray is the optional extra `ray` (`pip install 'copyseek[ray]'`); nothing here imports it before
it is needed. See docs/scale.md.
"""
