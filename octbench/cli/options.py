"""What the commands share: exit codes, the parser class, -q / -v, ``--set`` settings, argument
types that take ASCII digits only, and the experiment YAML read with ``--set`` values.

Must not import at module level: torch, or octbench modules that import it; ``--help`` imports
this module.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path

from octbench.errors import OctbenchError

EXIT_USAGE, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130
#: As a Unix tool ended by SIGPIPE (128 + 13) when the reader of its output goes away.
EXIT_BROKEN_PIPE = 141

#: The raw scan files ``predict`` and ``data show`` take.
SCAN_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


class CommandParser(argparse.ArgumentParser):
    """argparse, with one-line errors that name the fix (exit code 2, as argparse does)."""

    def error(self, message):
        hint = ""
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            from octbench.registry import did_you_mean

            hint = did_you_mean(choice[1], re.findall(r"[\w-]+", choice[2]))
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}.{hint} "
                              f"(see `{self.prog} --help`)\n")


def verbosity_options() -> argparse.ArgumentParser:
    """-q / -v, accepted before and after the subcommand (SUPPRESS: a later level keeps them)."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                         help="print only errors and the final result line")
    options.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                         help="more detail (debug messages, tracebacks of failed runs)")
    return options


def command_settings() -> dict:
    """The settings of every parser, the top one and each command's: -q / -v, and
    descriptions kept as written."""
    return dict(parents=[verbosity_options()],
                formatter_class=argparse.RawDescriptionHelpFormatter)


def subcommands(parser: argparse.ArgumentParser, dest: str, metavar: str):
    """The subcommands of ``parser`` (one required), parsed with :class:`CommandParser`."""
    return parser.add_subparsers(dest=dest, required=True, metavar=metavar,
                                 parser_class=CommandParser)


def setting(text: str) -> tuple[str, object]:
    """An argparse type: ``KEY=VALUE`` in one word, the value read as YAML (like in a file)."""
    from octbench.config import parse_scalar

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(
            f"{text!r} must look like KEY=VALUE in one word, e.g. --set scale=0.1 or "
            "--set train.epochs=1")
    try:
        return key.strip(), parse_scalar(value)
    except OctbenchError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None


setting.__name__ = "KEY=VALUE"  # argparse names the type in its messages


def add_overrides(parser: argparse.ArgumentParser) -> None:
    """``--set KEY=VALUE`` (repeatable) on a command that reads an experiment YAML."""
    parser.add_argument("--set", action="append", default=[], type=setting, metavar="KEY=VALUE",
                        help="change one setting of the YAML without editing it, e.g. --set "
                             "train.epochs=1 --set data.scale=0.01 --set seeds=[0] (repeatable; "
                             "validated like the file, part of the run ids)")


#: Numbers on the command line: ASCII digits only (``int()`` also takes '١٢', '1_0' and ' 7 ').
_ASCII_INT = re.compile(r"[0-9]{1,12}", re.ASCII)
_ASCII_FLOAT = re.compile(r"([0-9]{1,12}\.?[0-9]{0,12}|\.[0-9]{1,12})([eE][-+]?[0-9]{1,3})?",
                          re.ASCII)


def ascii_int(text: str) -> int:
    """An argparse type: a non-negative integer written in ASCII digits."""
    if not _ASCII_INT.fullmatch(text):
        raise argparse.ArgumentTypeError(f"must be a whole number in digits 0-9, got {text!r}")
    return int(text)


def ascii_float(text: str) -> float:
    """An argparse type: a non-negative decimal number (``0.25``, ``1e-1``) in ASCII digits."""
    if not _ASCII_FLOAT.fullmatch(text):
        raise argparse.ArgumentTypeError(f"must be a number in digits 0-9 such as 0.25, got "
                                         f"{text!r}")
    return float(text)


ascii_int.__name__ = "integer"  # argparse names the type in its messages
ascii_float.__name__ = "number"


def int_between(low: int, high: int):
    """An argparse type: an integer in [low, high] (bounds keep a typo from exhausting the
    machine, e.g. a billion bootstrap resamples)."""
    def parse(text: str) -> int:
        if not _ASCII_INT.fullmatch(text):
            raise argparse.ArgumentTypeError(f"must be an integer from {low} to {high:,} in "
                                             f"digits 0-9, got {text!r}")
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"must be an integer from {low} to {high:,}, got {text}")
        return value
    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def png_path(text: str) -> str:
    """An argparse type: a PNG file to write (not a folder; matplotlib would write DIR.png)."""
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name such as "
                                         f"{Path(text) / 'samples.png'}")
    if not text.lower().endswith(".png"):
        raise argparse.ArgumentTypeError(f"{text} must end in .png (a PNG image is written)")
    return text


def load_experiment(path: str, settings: list[tuple[str, object]], max_runs: int | None = None):
    """The experiment YAML with ``--set`` values applied, validated.

    What needs no model code (keys, names, devices, train values, and the parameters of
    models, strategies and datasets as the cached catalog describes them) is checked first,
    before torch is imported, so that a typo is reported at once rather than after seconds of
    imports.
    """
    from octbench.catalog import cached_catalog, parameter_schemas
    from octbench.config import check_grid_size, check_plain, read_config

    raw = read_config(path, dict(settings))
    check_grid_size(raw, **({"max_runs": max_runs} if max_runs else {}), source=path)
    listing = cached_catalog()  # the names, if `list` or an earlier run cached them
    known = None if listing is None else {
        "model": [e["name"] for e in listing["models"]], "timm": listing["timm"],
        "strategy": [e["name"] for e in listing["strategies"]],
        "dataset": [e["name"] for e in listing["datasets"]]}
    check_plain(raw, path, known=known,
                schemas=None if listing is None else parameter_schemas(listing))
    from octbench.config import parse_config

    return parse_config(raw, source=path)


def command_line(verb: str, config: str, settings: list[tuple[str, object]]) -> str:
    """The command line that runs ``verb`` on ``config`` with the same ``--set`` values."""
    words = ["python", "-m", "octbench", verb, config]
    words += [word for key, value in settings for word in ("--set", f"{key}={json.dumps(value)}")]
    return shlex.join(words)
