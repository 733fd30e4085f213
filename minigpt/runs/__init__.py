"""Runs of many stages or models: `compare` (every model family, one report) and `speedrun` (the whole pipeline)."""
