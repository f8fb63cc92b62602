"""Experiment drivers and the comparison report over training runs (`experiments.compare`)."""
