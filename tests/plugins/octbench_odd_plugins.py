# Test-only plugin (no module docstring on purpose): entries that a careless plugin author
# writes. Loaded with OCTBENCH_PLUGINS=octbench_odd_plugins; `octbench list` must survive them.

from octbench.models import MODELS
from octbench.strategies import STRATEGIES
from octbench.strategies.losses import weighted_ce


@MODELS.register
def undocumented_net(*, num_classes: int = 4, in_chans: int = 1, img_size: int = 28):
    from octbench.models.reference import reference_cnn

    return reference_cnn(num_classes=num_classes, in_chans=in_chans, img_size=img_size,
                         width=0.25)


@MODELS.register
def broken_net(*, num_classes: int = 4, in_chans: int = 1, img_size: int = 28):
    """Test only: a model whose factory always raises."""
    raise RuntimeError("broken_net cannot be built (on purpose)")


@STRATEGIES.register
def undocumented_strategy(*, class_counts: list[int]):
    return weighted_ce(class_counts=class_counts)
