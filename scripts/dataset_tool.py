"""Build a training dataset; see `python scripts/dataset_tool.py --help`."""
from stylegan_rlo.cli.dataset_tool import main

if __name__ == "__main__":
    main()
