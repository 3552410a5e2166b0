"""stylegan-rlo: StyleGAN2-ADA fine-tuning with the rooted logistic objective (arXiv 2310.03890)."""

__version__ = "0.1.0"

import os

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))  # the installed package (its assets/ beside this file)
