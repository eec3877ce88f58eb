"""Plugins: modules named in ``$OCTBENCH_PLUGINS`` that register more models, strategies or
datasets when imported. The CLI, the listing cache and the Ray workers all read them here.

Must not import torch or any octbench module above ``errors``.
"""

from __future__ import annotations

import importlib
import os

from octbench.errors import OctbenchError

#: The environment variable naming the plugin modules, comma-separated.
PLUGINS_VARIABLE = "OCTBENCH_PLUGINS"


def plugin_names() -> str:
    """The value of ``$OCTBENCH_PLUGINS`` ("" when unset), as passed to Ray workers."""
    return os.environ.get(PLUGINS_VARIABLE, "")


def load_plugins(names: str | None = None) -> list[str]:
    """Import the modules named in ``$OCTBENCH_PLUGINS`` (comma-separated); return their names.

    A plugin registers its entries on import, e.g. ``@MODELS.register`` on a factory
    ``def my_net(*, num_classes: int = 4, in_chans: int = 1, img_size: int = 28)``.

    Example:
        >>> load_plugins(" json , ")
        ['json']

    Raises:
        OctbenchError: a named module cannot be imported.
    """
    names = plugin_names() if names is None else names
    loaded = []
    for name in filter(None, (part.strip() for part in names.split(","))):
        try:
            importlib.import_module(name)
        except Exception as error:
            raise OctbenchError(
                f"cannot import plugin module '{name}' named in ${PLUGINS_VARIABLE} "
                f"({type(error).__name__}: {error}); install it, add its folder to PYTHONPATH, "
                f"or remove it from ${PLUGINS_VARIABLE}."
            ) from None
        loaded.append(name)
    return loaded
