"""`make demo`: fine-tune the small pretrained model on dogs with both objectives and compare; see --help."""
from stylegan_rlo.cli.demo import main

if __name__ == "__main__":
    main()
