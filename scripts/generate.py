"""Generate images from a network pickle; see `python scripts/generate.py --help`."""
from stylegan_rlo.cli.generate import main

if __name__ == "__main__":
    main()
