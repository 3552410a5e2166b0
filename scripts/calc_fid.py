"""Compute FID/KID of a network pickle or between two datasets; see `python scripts/calc_fid.py --help`."""
from stylegan_rlo.cli.calc_fid import main

if __name__ == "__main__":
    main()
