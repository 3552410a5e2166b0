"""Throughput of the FID Inception feature extractor on the CPU, contiguous against channels-last weights, measured
side by side (alternating) so both see the same machine load. What metrics.CPU_MEMORY_FORMAT rests on."""

from __future__ import annotations

import time

import numpy as np
import torch

from stylegan_rlo.evaluation.inception_weights import feature_extractor, resolve_weights_path

FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def inception_throughput(weights: str | None = None, *, batch: int = 32, rounds: int = 3,
                         resolution: int = 32) -> dict[str, list[float]]:
    """Images per second of each memory format, `rounds` alternating timed batches each (after one warm-up)."""
    extractor = feature_extractor(resolve_weights_path(weights), ["2048"])
    images = torch.from_numpy(np.random.RandomState(0).randint(0, 256, (batch, 3, resolution, resolution),
                                                               dtype=np.uint8))
    rates: dict[str, list[float]] = {name: [] for name in FORMATS}
    with torch.no_grad():
        for step in range(rounds + 1):
            for name, fmt in FORMATS.items():
                extractor = extractor.to(memory_format=fmt)
                start = time.perf_counter()
                extractor(images)
                if step:  # the first round warms up
                    rates[name].append(batch / (time.perf_counter() - start))
    return rates
