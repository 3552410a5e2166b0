"""Starting a training run: the run directory and its training_options.json, then one process, N spawned local
processes (`--gpus N`), or the processes `torchrun` started (its RANK/WORLD_SIZE/LOCAL_RANK/MASTER_* environment)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator

import torch

from stylegan_rlo.fileio import atomic_write
from stylegan_rlo.training.data_loading import dataset_error_in
from stylegan_rlo.training.loop import training_loop
from stylegan_rlo.training.preemption import TrainingStopped, join_forwarding_signals
from stylegan_rlo.training.run_dir import create_run_dir


def torchrun_env() -> dict | None:
    """rank/world_size/local_rank when started by torchrun (or any launcher setting RANK and WORLD_SIZE)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return dict(rank=rank, world_size=world_size, local_rank=int(os.environ.get("LOCAL_RANK", rank)))


def options_record(options: dict, run_dir: str | None = None) -> dict:
    """What training_options.json holds: the loop's options, the objective once more as a top-level field (what
    readers of run directories look up, as in those written before it moved into loss_kwargs) and the run directory."""
    record = dict(options, objective=options["loss_kwargs"]["objective"])
    return record if run_dir is None else dict(record, run_dir=run_dir)


def prepare_run_dir(outdir: str, run_desc: str, options: dict) -> str:
    """Create the numbered run directory and write training_options.json into it."""
    run_dir = create_run_dir(outdir, run_desc)
    with atomic_write(os.path.join(run_dir, "training_options.json"), "w") as f:
        json.dump(options_record(options, run_dir), f, indent=2)
    return run_dir


def _backend(device: str) -> str:
    return "nccl" if device.startswith("cuda") else "gloo"


@contextlib.contextmanager
def _process_group(device: str, **init_kwargs) -> Iterator[None]:
    """torch.distributed set up for the block and torn down after it. On success every rank first meets at a barrier:
    a rank that tore its connections down while a peer still had its last collective's data in flight aborted the
    process now and then ("terminate called without an active exception"). After a failure the launcher (spawn or
    torchrun) ends the other ranks, so no rank waits there for a peer that is gone."""
    torch.distributed.init_process_group(backend=_backend(device), **init_kwargs)
    try:
        yield
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def _spawned_worker(rank: int, run_dir: str, options: dict, init_file: str, loop_kwargs: dict) -> dict:
    """Entry point of one `--gpus N` process; returns this rank's final training state (see training_loop)."""
    if options["device"] == "cuda":
        torch.cuda.set_device(rank)
    else:  # CPU ranks share the cores instead of each starting one thread per core
        torch.set_num_threads(max(1, torch.get_num_threads() // options["num_gpus"]))
    with _process_group(options["device"], init_method=f"file://{init_file}", rank=rank,
                        world_size=options["num_gpus"]):
        return training_loop(run_dir=run_dir, rank=rank, **options, **loop_kwargs)


def _check_stopped(state: dict, run_dir: str) -> None:
    """Raise TrainingStopped when a SIGINT/SIGTERM ended the loop early (after its snapshot)."""
    if state.get("stopped_by") is not None:
        raise TrainingStopped(state["stopped_by"], run_dir, state.get("snapshot_pkl"))


def _latest_snapshot(run_dir: str) -> str | None:
    names = sorted(n for n in os.listdir(run_dir) if n.startswith("network-snapshot-") and n.endswith(".pkl"))
    return os.path.join(run_dir, names[-1]) if names else None


def launch_training(run_desc: str, options: dict, outdir: str, **loop_kwargs) -> str:
    """Run training with `options` (from setup_training_options) in a new run directory; returns its path.

    `loop_kwargs` (e.g. show_progress=False) go to training_loop as well; with spawned processes they must pickle.
    Raises preemption.TrainingStopped when SIGINT/SIGTERM stopped the run early (after a snapshot).
    """
    env = torchrun_env()
    if env is not None:
        if env["world_size"] != options["num_gpus"]:
            raise ValueError(f"torchrun started {env['world_size']} processes but the options are for "
                             f"{options['num_gpus']}; pass --gpus {env['world_size']} (or leave it out)")
        if options["device"] == "cuda":
            torch.cuda.set_device(env["local_rank"])
        with _process_group(options["device"], init_method="env://", rank=env["rank"], world_size=env["world_size"]):
            holder = [prepare_run_dir(outdir, run_desc, options) if env["rank"] == 0 else None]
            torch.distributed.broadcast_object_list(holder, src=0)
            state = training_loop(run_dir=holder[0], rank=env["rank"], local_rank=env["local_rank"], **options,
                                  **loop_kwargs)
        _check_stopped(state, holder[0])
        return holder[0]

    run_dir = prepare_run_dir(outdir, run_desc, options)
    if options["num_gpus"] == 1:
        _check_stopped(training_loop(run_dir=run_dir, rank=0, **options, **loop_kwargs), run_dir)
        return run_dir
    with tempfile.TemporaryDirectory() as temp_dir:
        init_file = os.path.abspath(os.path.join(temp_dir, ".torch_distributed_init"))
        try:
            context = torch.multiprocessing.start_processes(
                _spawned_worker, args=(run_dir, dict(options), init_file, loop_kwargs), nprocs=options["num_gpus"],
                join=False, start_method="spawn")
            signum = join_forwarding_signals(context)  # a signal to this launcher stops every rank
            if signum is not None:
                raise TrainingStopped(signum, run_dir, _latest_snapshot(run_dir))
        except torch.multiprocessing.ProcessRaisedException as e:
            unwrapped = dataset_error_in(str(e))
            if unwrapped is not None:  # a bad image: its message alone, as in a single-process run
                raise unwrapped from None
            raise
    return run_dir
