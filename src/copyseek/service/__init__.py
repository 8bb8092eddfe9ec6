"""`copyseek serve`: an HTTP matching service over an index (app.py), its API keys (keys.py) and a review page (static/)."""
