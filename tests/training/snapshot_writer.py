"""A snapshot writer for the kill test (run as a script): writes (pickle, state) pairs with write_pair, cycling over
three snapshot names so that most writes replace a snapshot of the same name, until it is killed.

argv: run_dir, fixture pickle, first write id, seed. Prints 'ready' before the first write, then each finished id.
Every write puts its id into both the pickle's progress and the state, so a checker can tell whether a pickle is
paired with its own state."""

import os
import sys

import torch

from stylegan_rlo.checkpoints.pickles import load_network_pkl
from stylegan_rlo.training.snapshots import write_pair

NAMES = 3


def main() -> None:
    run_dir, fixture, first_id, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    G = load_network_pkl(fixture)["G_ema"]
    gen = torch.Generator().manual_seed(seed)
    print("ready", flush=True)
    write_id = first_id
    while True:
        path = os.path.join(run_dir, f"network-snapshot-{write_id % NAMES:06d}.pkl")
        size = int(torch.randint(10_000, 1_000_000, [], generator=gen))  # varies where a kill lands
        snapshot = dict(training_set_kwargs={}, G=G, D=None, G_ema=G, augment_pipe=None,
                        progress=dict(cur_nimg=write_id * 1000, write_id=write_id))
        state = dict(progress=dict(write_id=write_id), payload=torch.randn([size], generator=gen))
        write_pair(path, snapshot, state)
        print(write_id, flush=True)
        write_id += 1


if __name__ == "__main__":
    main()
