"""Describers: turn decoded images into what a branch searches (global vectors, local features, hashes)."""
