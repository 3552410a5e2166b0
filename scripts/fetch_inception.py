"""Prepare the offline Inception weights for FID/KID (run by `make setup`)."""
from stylegan_rlo.cli.fetch_inception import main
main()
