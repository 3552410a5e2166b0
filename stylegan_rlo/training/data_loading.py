"""The training data of one rank: the dataset, its endless shuffled loader (resumable mid-stream), and each
iteration's batch of reals with latents and labels for the generator; a bad image's error keeps its own message."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from stylegan_rlo.data.dataset import DatasetError, ImageFolderDataset
from stylegan_rlo.training import preemption
from stylegan_rlo.training.state import SkipSampler
from stylegan_rlo.training.step import Batch
from torch_utils import misc

_TRACEBACK_MARKER = "Traceback (most recent call last)"  # in exceptions passed on from other processes as text


def load_training_set(training_set_kwargs: dict | None) -> ImageFolderDataset:
    """The dataset from its options (class_name is recorded in snapshots, not a constructor argument)."""
    return ImageFolderDataset(**{key: value for key, value in (training_set_kwargs or {}).items()
                                 if key != "class_name"})


def start_loader(training_set: ImageFolderDataset, data_loader_kwargs: dict | None, *, rank: int, num_gpus: int,
                 batch_size: int, seed: int, skip: int, pin_memory: bool) -> Iterator:
    """This rank's share (batch_size // num_gpus) of an endless shuffled stream, after its first `skip` indices
    (the images a resumed run drew already); loader workers leave the stop signals to the training process."""
    sampler = misc.InfiniteSampler(dataset=training_set, rank=rank, num_replicas=num_gpus, seed=seed)
    if skip:
        sampler = SkipSampler(sampler, skip)
    loader_kwargs = dict(data_loader_kwargs or {})
    workers = int(loader_kwargs.pop("num_workers", 0))
    if workers > 0:
        loader_kwargs.setdefault("worker_init_fn", preemption.ignore_stop_signals)
    return iter(torch.utils.data.DataLoader(dataset=training_set, sampler=sampler, batch_size=batch_size // num_gpus,
                                            num_workers=workers, pin_memory=pin_memory,
                                            prefetch_factor=(2 if workers > 0 else None), **loader_kwargs))


def dataset_error_in(traceback_text: str) -> DatasetError | None:
    """The DatasetError that ends a traceback printed by another process (a loader worker, a spawned rank), if any.

    Such errors reach us as text wrapped in the other process's traceback; this recovers the dataset's own message
    (which names the bad file) so that it can be shown without the traceback.
    """
    marker = f"{DatasetError.__name__}: "
    if _TRACEBACK_MARKER not in traceback_text or marker not in traceback_text:
        return None
    return DatasetError(traceback_text.rsplit(marker, 1)[-1].strip())


def next_batch(iterator: Iterator) -> tuple[torch.Tensor, torch.Tensor]:
    """The loader's next batch; a bad image met by a loader worker is re-raised with just its own message."""
    try:
        return next(iterator)
    except DatasetError as e:
        unwrapped = dataset_error_in(str(e))
        if unwrapped is not None:
            raise unwrapped from None
        raise


def draw_batch(iterator: Iterator, training_set: ImageFolderDataset, num_gen: int, G: torch.nn.Module,
               device: torch.device) -> Batch:
    """One iteration's inputs: this rank's reals in [-1, 1] with their labels, and `num_gen` latents for `G` with
    labels drawn from the training set (zero-width when G is unconditional) for the phases to share out."""
    images, labels = next_batch(iterator)
    real_img = images.to(device).to(torch.float32).div_(127.5).sub_(1)
    real_c = labels.to(device)
    gen_z = torch.randn([num_gen, G.z_dim], device=device)
    if G.c_dim > 0:
        picks = np.random.randint(len(training_set), size=num_gen)
        gen_c = torch.from_numpy(np.stack([training_set.get_label(i) for i in picks])).to(device)
    else:
        gen_c = torch.zeros([num_gen, 0], device=device)
    return Batch(real_img, real_c, gen_z, gen_c)
