"""Texts (built-in, local files, named and hub data sets), tokens and windows, and where data lives."""
