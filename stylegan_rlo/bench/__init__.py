"""Benchmarks: the training iteration, the custom ops, the Inception feature extractor."""
