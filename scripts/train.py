"""Train or fine-tune StyleGAN2-ADA (logistic or rooted objective); see `python scripts/train.py --help`."""
from stylegan_rlo.cli.train import main

if __name__ == "__main__":  # guarded: --gpus N spawns processes that re-import this file
    main()
