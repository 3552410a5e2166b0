"""Preemption-safe stop, with real signals: SIGTERM / SIGINT make scripts/train.py finish its iteration, write a
snapshot with its training state, print the resume command and exit 143 / 130; with --gpus 2 a SIGINT to the
launcher alone stops both ranks (it used to print "Aborted!" and leave them training)."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from training_fixtures import REPO, TINY_UNCOND, make_zip, subprocess_env

from stylegan_rlo.checkpoints.pickles import load_network_pkl
from stylegan_rlo.cli.train import resume_command
from stylegan_rlo.training import preemption
from stylegan_rlo.training import state as training_state

FAST = ["--device", "cpu", "--workers", "0", "--batch", "4", "--tick", "0.004", "--snap", "1000", "--kimg", "1000"]
SCRIPT = """
from stylegan_rlo.training import loop as training_loop
training_loop.default_grid_size = lambda image_shape: (2, 2)  # small grids; spawned ranks re-import this file
from stylegan_rlo.cli.train import main
if __name__ == "__main__":
    main()
"""


def start(tmp_path, extra):
    data = make_zip(tmp_path / "dogs.zip", num=8)
    script = tmp_path / "train_small_grids.py"
    script.write_text(SCRIPT)
    args = ["--data", data, "--outdir", tmp_path / "runs", "--resume", TINY_UNCOND, *FAST, *extra]
    return subprocess.Popen([sys.executable, str(script)] + [str(a) for a in args], cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_for_ticks(proc, outdir, ticks, timeout=300):
    """The run directory once its stats.jsonl has `ticks` lines (training is under way)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        runs = os.listdir(outdir) if os.path.isdir(outdir) else []
        stats = os.path.join(outdir, runs[0], "stats.jsonl") if runs else None
        if stats and os.path.exists(stats):
            with open(stats, encoding="utf-8") as f:
                if len(f.readlines()) >= ticks:
                    return os.path.dirname(stats)
        time.sleep(0.2)
    raise AssertionError("training did not start in time")


def children(pid):
    """PIDs of the processes whose parent is `pid` (the spawned ranks and multiprocessing helpers)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def finish(proc, timeout=240):
    try:
        return proc.communicate(timeout=timeout)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def check_stopped_run(output, run_dir, exit_code, returncode, num_gpus):
    assert returncode == exit_code, output[-3000:]
    assert "Traceback" not in output and "Aborted" not in output, output[-3000:]
    snapshot = os.path.join(run_dir, "network-snapshot-000000.pkl")
    assert "Continue exactly with:" in output and f"--resume {snapshot}" in output, output[-3000:]
    state = torch.load(training_state.state_path(snapshot), weights_only=True)
    progress = load_network_pkl(snapshot)["progress"]
    assert state["progress"] == progress and state["num_gpus"] == num_gpus and len(state["ranks"]) == num_gpus
    with open(os.path.join(run_dir, "stats.jsonl"), encoding="utf-8") as f:
        last_tick = f.readlines()[-1]
    assert f'"mean": {progress["cur_nimg"] / 1000}' in last_tick  # the snapshot is of the last iteration
    return progress


def test_sigterm_finishes_the_iteration_writes_a_snapshot_and_exits_143(tmp_path):
    proc = start(tmp_path, [])
    run_dir = wait_for_ticks(proc, tmp_path / "runs", 2)
    proc.send_signal(signal.SIGTERM)
    output = finish(proc)
    progress = check_stopped_run(output, run_dir, 143, proc.returncode, 1)
    assert progress["cur_nimg"] >= 8
    assert "Received SIGTERM: stopping after this iteration" in output


@pytest.mark.slow  # ~60-120 s on a shared CPU: two spawned gloo ranks, twice
def test_sigint_to_the_gpus_2_launcher_stops_every_rank(tmp_path):
    proc = start(tmp_path, ["--gpus", "2"])
    run_dir = wait_for_ticks(proc, tmp_path / "runs", 2)
    ranks = [pid for pid in children(proc.pid) if "spawn" in open(f"/proc/{pid}/cmdline").read()]
    assert len(ranks) >= 2
    os.kill(proc.pid, signal.SIGINT)  # the launcher alone, as `kill -INT`
    output = finish(proc)
    progress = check_stopped_run(output, run_dir, 130, proc.returncode, 2)
    deadline = time.time() + 10
    while time.time() < deadline and any(alive(pid) for pid in ranks):
        time.sleep(0.1)
    assert not any(alive(pid) for pid in ranks)
    # Both ranks continue from the snapshot: rank 0 reads the state file and hands it to rank 1.
    snapshot = os.path.join(run_dir, "network-snapshot-000000.pkl")
    proc = start(tmp_path, ["--gpus", "2", "--resume", snapshot, "--kimg", (progress["cur_nimg"] + 4) / 1000])
    output = finish(proc, timeout=400)
    assert proc.returncode == 0, output[-3000:]
    resumed = sorted(os.listdir(tmp_path / "runs"))[-1]
    with open(tmp_path / "runs" / resumed / "log.txt", encoding="utf-8") as f:
        assert f'Restored the training state from "{training_state.state_path(snapshot)}"' in f.read()


def test_stop_request_records_the_first_signal_and_escalates_on_the_second():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    stop = preemption.StopRequest(escalate=True).start()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # the handler runs in the main thread between bytecodes
        assert stop.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
    finally:
        stop.close()
    assert {sig: signal.getsignal(sig) for sig in before} == before  # handlers put back
    quiet = preemption.StopRequest(escalate=False).start()
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            os.kill(os.getpid(), sig)
            time.sleep(0.01)
        assert quiet.signum == signal.SIGTERM  # a rank keeps the first and ignores the forwarded copy
    finally:
        quiet.close()
    assert preemption.TrainingStopped(signal.SIGTERM, "run", None).exit_code == 143


def test_resume_command_replaces_resume():
    argv = ["scripts/train.py", "--data", "a b.zip", "--resume", "old.pkl", "--kimg", "10", "--resume=other.pkl"]
    assert resume_command(argv, "runs/x/network-snapshot-000004.pkl") == \
        "python scripts/train.py --data 'a b.zip' --kimg 10 --resume runs/x/network-snapshot-000004.pkl"


def _rank_waiting_for_a_signal(rank, folder):
    """A stand-in rank: catches the stop signals like the training loop's ranks, then reports what it got."""
    stop = preemption.StopRequest(escalate=False).start()
    open(os.path.join(folder, f"ready{rank}"), "w").close()
    deadline = time.time() + 60
    while stop.signum is None and time.time() < deadline:
        time.sleep(0.01)
    with open(os.path.join(folder, f"rank{rank}"), "w") as f:
        f.write(str(stop.signum))


def test_launcher_forwards_a_signal_to_every_rank(tmp_path):
    """The always-on twin of the --gpus 2 test: join_forwarding_signals with two forked stand-in ranks."""
    import threading
    found = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN in a background shell
    context = torch.multiprocessing.start_processes(_rank_waiting_for_a_signal, args=(str(tmp_path),), nprocs=2,
                                                    join=False, start_method="fork")

    def signal_when_ready():
        # Both ranks catch signals, and so does the launcher (else the signal would interrupt this test itself, or be
        # ignored where the shell ignores SIGINT): wait until its handler replaced the one found at the start.
        while not all(os.path.exists(tmp_path / f"ready{r}") for r in range(2)) or \
                signal.getsignal(signal.SIGINT) is found:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=signal_when_ready, daemon=True).start()
    assert preemption.join_forwarding_signals(context) == signal.SIGINT
    assert [(tmp_path / f"rank{r}").read_text() for r in range(2)] == [str(int(signal.SIGINT))] * 2
