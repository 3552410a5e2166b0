"""Experiments built on training and evaluation: objective comparisons, the demo and its data, logreg."""
