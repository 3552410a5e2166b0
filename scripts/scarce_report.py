"""The cross-comparison report of experiment 2 (scarce dogs) from several comparison summaries; see --help."""
from stylegan_rlo.cli.scarce_report import main

if __name__ == "__main__":
    main()
