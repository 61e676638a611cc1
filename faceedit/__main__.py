"""``python -m faceedit`` (and ``torchrun ... -m faceedit``) runs the command line."""
from faceedit.cli import main

if __name__ == "__main__":
    main()
