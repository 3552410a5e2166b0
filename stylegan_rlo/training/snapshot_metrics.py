"""Metrics of network snapshots during training: evaluated on each snapshot's G_ema, appended to
metric-<name>.jsonl, and the best snapshot so far kept as best-<metric>.pkl."""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Sequence

import torch

from stylegan_rlo.evaluation.memorization import METRIC_NAME as MEM_METRIC
from stylegan_rlo.training.best_snapshot import update_best
from stylegan_rlo.training.options import TrainingOptionsError


def check_held_out(metrics: Sequence[str], metric_data: str | None, training_data: str) -> None:
    """The memorization metric needs held-out images (--metric-data) other than the training data: refuse early."""
    if MEM_METRIC not in metrics:
        return
    if metric_data is None or os.path.realpath(metric_data) == os.path.realpath(training_data):
        raise TrainingOptionsError(f"--metrics {MEM_METRIC} needs --metric-data HELD_OUT: images of the same kind "
                                   f"that training does not use, whose distances to the training data calibrate how "
                                   f"near a generated image may come to a training image")


@dataclasses.dataclass
class SnapshotMetrics:
    """Which metrics to evaluate and against what: the training data (x-flipped copies included when training
    mirrors), or held-out images as they are. The memorization metric also searches the training data
    (`training_data`, `training_mirror`), with the held-out images as its calibration."""
    names: list[str]
    num_gen: int | None
    data: str
    mirror: bool
    best_metric: str | None
    device: torch.device
    seed: int
    training_data: str
    training_mirror: bool
    vgg16_weights: str | None = None

    @classmethod
    def plan(cls, metrics: Sequence[str], metrics_num: int | None, training_set_kwargs: dict,
             metric_data: str | None, best_metric: str | None, device: torch.device, seed: int,
             vgg16_weights: str | None = None) -> SnapshotMetrics:
        """The evaluation of the training loop's metric options; `metric_data` None means the training data."""
        training_data, training_mirror = training_set_kwargs["path"], bool(training_set_kwargs.get("xflip", False))
        data = training_data if metric_data is None else metric_data
        mirror = training_mirror and metric_data is None
        return cls(list(metrics), metrics_num, data, mirror, best_metric, device, seed, training_data,
                   training_mirror, vgg16_weights)

    def evaluate(self, G_ema: torch.nn.Module, snapshot_pkl: str, cur_nimg: int, run_dir: str,
                 log: Callable[[str], None]) -> dict[str, float]:
        """Evaluate the snapshot's G_ema, record the results and keep the best snapshot; returns {result name:
        value} for TensorBoard."""
        # start-up: evaluation.metrics loads torch_fidelity, which only runs that evaluate metrics need
        from stylegan_rlo.evaluation.metrics import append_records, evaluate_snapshot
        log("Evaluating metrics...")
        records = evaluate_snapshot(G_ema, metrics=self.names, data=self.data, num_gen=self.num_gen,
                                    mirror=self.mirror, device=str(self.device), seed=self.seed,
                                    snapshot_pkl=os.path.basename(snapshot_pkl), training_data=self.training_data,
                                    training_mirror=self.training_mirror, vgg16_weights=self.vgg16_weights)
        append_records([dict(record, data=self.data) for record in records], run_dir)
        for record in records:
            if record["metric"] == self.best_metric and update_best(
                    run_dir, self.best_metric, record["results"][self.best_metric], snapshot_pkl, cur_nimg / 1000):
                log(f"New best {self.best_metric}: {os.path.basename(snapshot_pkl)} is now best-{self.best_metric}.pkl")
        results: dict[str, float] = {}
        for record in records:
            for name, value in record.get("results", {}).items():
                results[name] = float(value)
                log(f"{record.get('metric', name)}: {name} = {value:g}")
        return results
