"""A stop signal during set-up or a metric evaluation interrupts at once (the work there is dropped, nothing is lost):
the signal is sent from inside the slow step, which then sleeps far longer than the test allows."""

from __future__ import annotations

import os
import signal
import time

import pytest
from training_fixtures import TINY_UNCOND, make_zip

from stylegan_rlo.training import loop as training_loop
from stylegan_rlo.training import preemption
from stylegan_rlo.training import state as training_state
from stylegan_rlo.training.config import setup_training_options
from stylegan_rlo.training.launch import launch_training
from stylegan_rlo.training.snapshot_metrics import SnapshotMetrics

HANG_S = 120  # what the interrupted step would take without the interruption


def _signal_then_hang(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(HANG_S)
    raise AssertionError("not interrupted")


def test_interrupting_raises_at_once_and_records_outside():
    stop = preemption.StopRequest(escalate=True).start()
    try:
        with pytest.raises(preemption.StopNow) as e, stop.interrupting():
            _signal_then_hang()
        assert e.value.signum == signal.SIGTERM and stop.signum == signal.SIGTERM
        with pytest.raises(preemption.StopNow), stop.interrupting():  # a signal that came before also stops
            pass
        with stop.interrupting(enabled=False):  # ranks of a distributed run finish together instead
            pass
    finally:
        stop.close()


def _options(data, **extra):
    return setup_training_options(data=str(data), resume=str(TINY_UNCOND), device="cpu", workers=0, batch=4,
                                   tick=0.004, snap=1, kimg=1, **extra)


def test_signal_during_metric_evaluation_drops_it_and_stops(tmp_path, one_thread, monkeypatch):
    data = make_zip(tmp_path / "dogs.zip", num=8)
    monkeypatch.setattr(SnapshotMetrics, "evaluate", _signal_then_hang)
    desc, options = _options(data, metrics="kid50k_full", metrics_num=8)
    start = time.monotonic()
    with pytest.raises(preemption.TrainingStopped) as e:
        launch_training(desc, options, str(tmp_path / "runs"), show_progress=False, image_grid=(2, 2))
    assert time.monotonic() - start < HANG_S / 2
    assert e.value.signum == signal.SIGTERM and e.value.snapshot.endswith("network-snapshot-000000.pkl")
    assert os.path.exists(training_state.state_path(e.value.snapshot))
    with open(os.path.join(e.value.run_dir, "log.txt"), encoding="utf-8") as f:
        log = f.read()
    assert "during the metric evaluation: dropped it" in log and "Stopped by SIGTERM" in log


def test_signal_during_set_up_stops_it(tmp_path, one_thread, monkeypatch):
    data = make_zip(tmp_path / "dogs.zip", num=8)
    monkeypatch.setattr(training_loop, "_start_networks", _signal_then_hang)
    desc, options = _options(data)
    start = time.monotonic()
    with pytest.raises(preemption.TrainingStopped) as e:
        launch_training(desc, options, str(tmp_path / "runs"), show_progress=False, image_grid=(2, 2))
    assert time.monotonic() - start < HANG_S / 2 and e.value.snapshot is None
