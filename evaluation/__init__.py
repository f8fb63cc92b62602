"""Scoring predicted grids and running evaluations over dataset splits."""
