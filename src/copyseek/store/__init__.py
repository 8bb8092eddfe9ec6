"""The index directory: a SQLite manifest, chunk files of branch features, atomic commits."""
