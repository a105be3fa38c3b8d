"""Refusing bad input in one line: the errors, value checks, and device and dtype names."""
