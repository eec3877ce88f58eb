"""``python -m octbench``: the command-line interface.

Must not import: anything but the CLI.
"""

from octbench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
