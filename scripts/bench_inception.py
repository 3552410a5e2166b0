"""FID Inception throughput on the CPU, contiguous vs channels-last; see `python scripts/bench_inception.py --help`."""
from stylegan_rlo.cli.bench_inception import main

if __name__ == "__main__":
    main()
