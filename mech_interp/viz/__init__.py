"""Plotly figures drawn from saved tables, and how they are written (HTML + PNG)."""
