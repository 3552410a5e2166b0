"""Time the training iteration; see `python scripts/bench.py --help`."""
from stylegan_rlo.cli.bench import main

if __name__ == "__main__":
    main()
