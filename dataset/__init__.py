"""Puzzle datasets: on-disk format, builders, task checkers and the loader."""
