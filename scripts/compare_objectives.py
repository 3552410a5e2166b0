"""Compare adversarial objectives by fine-tuning one checkpoint per objective/seed; see --help."""
from stylegan_rlo.cli.compare_objectives import main

if __name__ == "__main__":  # guarded: --gpus N spawns processes that re-import this file
    main()
