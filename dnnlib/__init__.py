"""Upstream-compatible `dnnlib` namespace: the names official StyleGAN2-ADA code and pickles refer to."""

from .util import EasyDict, make_cache_dir_path  # noqa: F401
