"""Measurements on a model: perplexity under plain forward hooks, attention and head scores."""
