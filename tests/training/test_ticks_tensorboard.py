"""TensorBoard export: a tiny CPU run's event file, read back with tensorboard's own reader, holds every tick's
statistics at the tick's whole kimg (upstream's global step) and each metric from the snapshot it was computed at;
without tensorboard installed, training notes the skip and goes on."""

import json
import os
import sys

import pytest
from training_fixtures import TINY_UNCOND, make_zip

from stylegan_rlo.checkpoints.pickles import load_network_pkl, save_network_pkl
from stylegan_rlo.evaluation import metrics
from stylegan_rlo.training import ticks
from stylegan_rlo.training.config import setup_training_options
from stylegan_rlo.training.launch import launch_training


def read_scalars(run_dir):
    """{tag: [(step, value), ...]} from the run directory's event file(s), through TensorBoard's EventAccumulator."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(run_dir, size_guidance={accumulator.SCALARS: 0})  # 0: keep every point
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_training_writes_losses_and_metrics_as_tensorboard_events(tmp_path, one_thread, monkeypatch):
    pytest.importorskip("tensorboard")
    # Resume at 992 images so that four-image ticks cross a whole kimg: ticks at 996, 1000, 1004 and 1008 images.
    resume = load_network_pkl(TINY_UNCOND)
    resume["progress"] = dict(cur_nimg=992, cur_tick=0, batch_idx=248)
    save_network_pkl(tmp_path / "resume.pkl", resume)
    values = iter([7.0, 5.0])  # the fake metric's results at the two snapshots

    def fake_evaluate(G, **kwargs):
        return [metrics.make_record("fid50k_full", next(values), num_gen=4, total_time=0.0,
                                    snapshot_pkl=kwargs["snapshot_pkl"])]

    monkeypatch.setattr(metrics, "evaluate_snapshot", fake_evaluate)
    data = make_zip(tmp_path / "dogs.zip", num=8)
    desc, options = setup_training_options(data=data, resume=str(tmp_path / "resume.pkl"), device="cpu", workers=0,
                                           batch=4, tick=0.004, snap=2, kimg=1.008, metrics="fid", p=0.2)
    run_dir = launch_training(desc, options, str(tmp_path / "runs"), show_progress=False, image_grid=(2, 2))
    assert [n for n in os.listdir(run_dir) if n.startswith("events.out.tfevents.")]
    with open(os.path.join(run_dir, "stats.jsonl"), encoding="utf-8") as f:
        stats = [json.loads(line) for line in f]
    assert [s["Progress/kimg"]["mean"] for s in stats] == pytest.approx([0.996, 1.000, 1.004, 1.008])

    scalars = read_scalars(run_dir)
    steps = [0, 1, 1, 1]  # int(cur_nimg / 1000) of each tick
    for tag in ("Loss/G/loss", "Loss/D/loss", "Loss/scores/real", "Loss/scores/fake", "Progress/tick",
                "Progress/kimg", "Progress/augment", "Timing/sec_per_tick", "Timing/sec_per_kimg",
                "Resources/cpu_mem_gb"):
        assert [step for step, _ in scalars[tag]] == steps, tag
        assert [value for _, value in scalars[tag]] == pytest.approx([s[tag]["mean"] for s in stats], rel=1e-6), tag
    assert [value for _, value in scalars["Progress/tick"]] == [1, 2, 3, 4]
    # Snapshots at ticks 2 (1000 images) and 4 (the last): a metric result appears at the tick of its snapshot and
    # repeats at every later tick until the next evaluation; none before the first.
    assert scalars["Metrics/fid50k_full"] == [(1, 7.0), (1, 7.0), (1, 5.0)]


def test_without_tensorboard_training_notes_the_skip(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # its import now fails as when not installed
    notes = []
    assert ticks.open_tensorboard("unused", notes.append) is None
    assert len(notes) == 1 and notes[0].startswith("Skipping TensorBoard export: ")
