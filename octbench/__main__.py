"""``python -m octbench``: the command-line interface."""

from octbench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
