"""Check a GPU machine and write gpu-report.md/.json; see `python scripts/gpu_check.py --help` and docs/gpu.md."""
from stylegan_rlo.cli.gpu_check import main

if __name__ == "__main__":
    main()
