"""``python -m ceuspipe``: the same as the ``ceuspipe`` command (handy under torchrun)."""

from ceuspipe.cli import main

if __name__ == "__main__":
    main()
