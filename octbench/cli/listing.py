"""``octbench list``: what an experiment YAML can name (models, strategies, datasets,
augmentations) with their parameters, from the cached catalog; ``--timm`` searches timm's names.

Must not import at module level: torch, or octbench modules that import it (a warm listing
answers without torch).
"""

from __future__ import annotations

import fnmatch

from octbench.cli.options import command_settings
from octbench.console import Console
from octbench.errors import OctbenchError


def add(commands) -> None:
    """Register ``list`` and its options."""
    parser = commands.add_parser(
        "list", help="list registered models, strategies, datasets or augmentations",
        **command_settings(),
        description="List what an experiment YAML can name, with each entry's parameters and "
                    "their defaults; `list models --timm NAME` searches timm's model names.")
    parser.add_argument("what", choices=("models", "strategies", "datasets", "augmentations"))
    parser.add_argument("--timm", metavar="PATTERN",
                        help="with models: timm model names containing PATTERN (or matching a "
                             "wildcard such as 'resnet*'), usable as timm:<name>")
    parser.set_defaults(handler=run)


def run(args) -> int:
    """``octbench list``: one line per entry (-q: the names alone; -v: each parameter)."""
    from octbench.catalog import catalog

    out = args.console
    listing = catalog()
    if args.timm is not None:
        return _list_timm(listing["timm"], args.timm, args.what, out)
    entries = listing[args.what]
    width = max(len(entry["name"]) for entry in entries) + 2
    for entry in entries:
        if out.quiet:  # the names alone, one a line, for scripts; an error is still said
            out.result(entry["name"] + (f"  cannot build ({entry['error']})"
                                        if entry.get("error") else ""))
        elif args.what == "models":
            parameters = (f"{entry['parameters']:>12,} parameters" if entry.get("error") is None
                          else f"cannot build ({entry['error']})")
            out.result(f"{entry['name']:<{width}}{parameters} (28 px, 4 classes)  "
                       f"{entry['summary']}")
        else:
            out.result(f"{entry['name']:<{width}}{entry['summary']}")
        if entry.get("settings"):
            out.info(f"{'':<{width}}parameters: {entry['settings']}")
        for key, parameter in _parameter_details(entry).items():
            out.detail(f"{'':<{width}}  {key}: {parameter}")
    if args.what == "models":
        out.info(f"{'timm:<name>':<{width}}any of timm's {len(listing['timm']):,} models, e.g. "
                 "timm:efficientnet_b0 (random init, in_chans=1); search with --timm NAME")
    return 0


def _parameter_details(entry: dict) -> dict[str, str]:
    """``{parameter: "a float, >= 0, required"}`` from a catalog entry's schema (-v)."""
    from octbench.config import type_name
    from octbench.registry import Parameter

    details = {}
    for key, value in (entry.get("schema") or {}).items():
        parameter = Parameter.from_json(value)
        details[key] = ", ".join([type_name(parameter.annotation)]
                                 + ([str(parameter.constraint)] if parameter.constraint else [])
                                 + (["required"] if parameter.required else []))
    return details


def _list_timm(names: list[str], pattern: str, what: str, out: Console) -> int:
    if what != "models":
        raise OctbenchError(f"--timm searches model names; use `octbench list models --timm "
                            f"{pattern}`.")
    wildcard = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
    found = [name for name in names if fnmatch.fnmatch(name, wildcard.lower())]
    if not found:
        raise OctbenchError(f"no timm model name matches '{pattern}'; try a shorter part of the "
                            "name, e.g. --timm resnet or --timm 'efficientnet*'.")
    for name in found:
        out.result(f"timm:{name}")
    out.detail(f"{len(found)} of timm's {len(names):,} model names")
    return 0
