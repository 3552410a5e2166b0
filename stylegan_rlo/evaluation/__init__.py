"""Evaluating generators: FID/KID (metrics), its feature cache, the Inception weights, and image generation."""
