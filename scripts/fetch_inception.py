"""Prepare the offline Inception weights for FID/KID (run by `make setup`)."""
from stylegan_rlo.cli.fetch_inception import main

if __name__ == "__main__":
    main()
