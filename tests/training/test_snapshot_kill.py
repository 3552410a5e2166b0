"""Snapshots under kill -9: every pickle left on disk has its own training state (issue: nothing lost).

A writer process (snapshot_writer.py) rewrites three snapshot names in turn and is killed at random moments, again
and again in the same folder; after each kill every surviving pickle must be found with the state written together
with it. The deterministic twins stop the protocol at each of its steps."""

from __future__ import annotations

import glob
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from stylegan_rlo.checkpoints.pickles import load_network_pkl
from stylegan_rlo.training import state as training_state
from stylegan_rlo.training.snapshots import write_pair
from training_fixtures import TINY_UNCOND, subprocess_env

WRITER = os.path.join(os.path.dirname(__file__), "snapshot_writer.py")


def _check_every_pair(run_dir: str) -> int:
    """Assert that each pickle in run_dir is found with the state of the same write; returns how many."""
    pickles = sorted(glob.glob(os.path.join(run_dir, "network-snapshot-*.pkl")))
    for pkl in pickles:
        write_id = load_network_pkl(pkl)["progress"]["write_id"]
        path = training_state.find_state(pkl)
        assert path is not None, f"{os.path.basename(pkl)} (write {write_id}) has no state file"
        state = torch.load(path, weights_only=True)
        assert state["progress"]["write_id"] == write_id, (pkl, path)
        assert state["pickle_sha256"] == training_state.file_sha256(pkl)
    return len(pickles)


def _kill_rounds(run_dir: str, rounds: int, seed: int) -> list[int]:
    """Start the writer, kill it after a random delay, check the folder; `rounds` times. Returns writes per round."""
    rnd = random.Random(seed)
    finished = []
    for round_idx in range(rounds):
        proc = subprocess.Popen([sys.executable, WRITER, run_dir, str(TINY_UNCOND), str(round_idx * 10_000),
                                 str(seed + round_idx)], stdout=subprocess.PIPE, text=True, env=subprocess_env())
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(rnd.uniform(0.0, 0.8))
        finally:
            proc.send_signal(signal.SIGKILL)
            out = proc.communicate()[0]
        finished.append(len(out.split()))
        _check_every_pair(run_dir)
    return finished


def test_random_kills_leave_every_pickle_with_its_own_state(tmp_path):
    finished = _kill_rounds(str(tmp_path), rounds=3, seed=1)
    assert sum(finished) > 0  # the writer got to write (else the check proves nothing)


@pytest.mark.slow
def test_fifty_random_kills_leave_every_pickle_with_its_own_state(tmp_path):
    finished = _kill_rounds(str(tmp_path), rounds=50, seed=2)
    assert sum(1 for n in finished if n > 0) >= 25


# ---------------------------------------------------------------------------------------------------------------
# The protocol stopped at each step (what a kill at that moment leaves).

class _Killed(Exception):
    pass


def _pair(write_id: int) -> tuple[dict, dict]:
    G = load_network_pkl(TINY_UNCOND)["G_ema"]
    snapshot = dict(training_set_kwargs={}, G=G, G_ema=G, progress=dict(cur_nimg=1000, write_id=write_id))
    return snapshot, dict(progress=dict(write_id=write_id))


def _ids(pkl: str) -> tuple[int, int]:
    state = torch.load(training_state.find_state(pkl), weights_only=True)
    return load_network_pkl(pkl)["progress"]["write_id"], state["progress"]["write_id"]


def test_kill_before_the_pickle_commits_keeps_the_previous_pair(tmp_path, monkeypatch):
    pkl = str(tmp_path / "network-snapshot-000001.pkl")
    write_pair(pkl, *_pair(1))
    real_write_next = training_state.write_next

    def stage_then_die(*args):
        real_write_next(*args)
        raise _Killed

    monkeypatch.setattr(training_state, "write_next", stage_then_die)
    with pytest.raises(_Killed):
        write_pair(pkl, *_pair(2))
    assert os.path.exists(training_state.next_state_path(pkl))  # the staged state of write 2 is left
    assert _ids(pkl) == (1, 1)
    monkeypatch.undo()
    write_pair(pkl, *_pair(3))  # settles the leftover first
    assert _ids(pkl) == (3, 3) and not os.path.exists(training_state.next_state_path(pkl))


def test_kill_after_the_pickle_commits_pairs_it_with_the_staged_state(tmp_path, monkeypatch):
    pkl = str(tmp_path / "network-snapshot-000001.pkl")
    write_pair(pkl, *_pair(1))

    def die(_pkl):
        raise _Killed

    monkeypatch.setattr(training_state, "promote", die)
    with pytest.raises(_Killed):
        write_pair(pkl, *_pair(2))
    assert training_state.find_state(pkl) == training_state.next_state_path(pkl)
    assert _ids(pkl) == (2, 2)
    monkeypatch.undo()
    training_state.settle(pkl)
    assert training_state.find_state(pkl) == training_state.state_path(pkl) and _ids(pkl) == (2, 2)


def test_a_state_file_of_another_pickle_is_refused(tmp_path):
    first, second = str(tmp_path / "network-snapshot-000001.pkl"), str(tmp_path / "network-snapshot-000002.pkl")
    write_pair(first, *_pair(1))
    write_pair(second, *_pair(2))
    os.replace(training_state.state_path(second), training_state.state_path(first))
    with pytest.raises(training_state.TrainingStateError, match="belongs to another snapshot"):
        training_state.find_state(first)
