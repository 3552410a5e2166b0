"""Time the upfirdn2d and bias_act CUDA kernels against the PyTorch path (needs a GPU); see --help."""
from stylegan_rlo.cli.bench_ops import main

if __name__ == "__main__":
    main()
