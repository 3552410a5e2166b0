"""The paper's convex experiment (Wine logistic regression, logistic vs rooted); see `--help`."""
from stylegan_rlo.cli.rlo_logreg import main

if __name__ == "__main__":
    main()
