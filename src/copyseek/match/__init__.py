"""Matching queries against an index: candidates per branch, score normalisation, fusion."""
