"""The model registry: :data:`MODELS` (name -> keyword-only factory
``f(*, num_classes, in_chans, img_size, **params)``) and the arguments the data supply. Model
modules import this and register themselves on import.

Must not import: the model modules (they import this), strategies, data, the engine or config.
"""

from __future__ import annotations

from octbench.registry import Registry

MODELS = Registry("model")

#: Factory arguments supplied by the data, not by the user.
DATA_PARAMS = ("num_classes", "in_chans", "img_size")
