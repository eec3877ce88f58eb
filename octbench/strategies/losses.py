"""Loss-based class-imbalance strategies and the criteria they use.

Every criterion computes its loss in float32 (``logits.float()``), so it gives the same answer for
float32 logits and for bf16 logits from autocast. Class weights, margins and logit offsets are
registered buffers, so ``criterion.to(device)`` moves them with the model.

Must not import: octbench beyond strategies, errors and the registry.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from octbench.errors import OctbenchError
from octbench.registry import Interval, OneOf
from octbench.strategies._registry import STRATEGIES, Strategy

# The seed project's hard-coded class weights (CNV, DME, DRUSEN, NORMAL).
SEED_WEIGHTS = [1.0, 1.0, 1.0, 3.0]


# --------------------------------------------------------------------------------------------
# Criteria
# --------------------------------------------------------------------------------------------


class AdjustedCrossEntropy(nn.Module):
    """Cross-entropy on ``logits + offset`` with optional class weights.

    With neither argument this is plain cross-entropy. ``weight`` gives the weighted mean of
    :func:`torch.nn.functional.cross_entropy`; ``offset`` is a per-class vector added to the
    logits during training only (balanced softmax, logit-adjusted loss).

    Args:
        weight: per-class weights, shape ``(k,)``, or ``None`` for uniform weights.
        offset: per-class logit offset, shape ``(k,)``, or ``None`` for none.
    """

    def __init__(self, weight: torch.Tensor | None = None, offset: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("offset", offset)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.offset is not None:
            logits = logits + self.offset
        return F.cross_entropy(logits, targets, weight=self.weight)


class FocalLoss(nn.Module):
    """Softmax focal loss ``-alpha_t (1 - p_t)^gamma log p_t``, averaged over the batch.

    Args:
        gamma: focusing parameter; 0 gives (alpha-weighted) cross-entropy.
        alpha: per-class weights, shape ``(k,)``, or ``None`` for none.
    """

    def __init__(self, gamma: float = 2.0, alpha: torch.Tensor | None = None):
        super().__init__()
        self.gamma = gamma
        self.register_buffer("alpha", alpha)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits.float(), targets, reduction="none")  # -log p_t
        # 1 - p_t via expm1 is exact near p_t = 1; the clamp keeps the gradient of x**gamma finite
        # there when gamma < 1 (otherwise 0 * inf = NaN for confidently right samples).
        modulator = (-torch.expm1(-ce)).clamp(min=1e-12) ** self.gamma
        loss = modulator * ce
        if self.alpha is not None:
            loss = self.alpha[targets] * loss
        return loss.mean()


class LDAMLoss(nn.Module):
    """Label-distribution-aware margin loss with optional deferred re-weighting (DRW).

    The loss is ``CE(scale * (logits - m_y onehot(y)), weight)``. DRW keeps the class weights as a
    buffer and switches them on through :attr:`reweight`, so switching keeps working after
    ``.to(device)``.

    Args:
        margins: per-class margins ``m_c``, shape ``(k,)``.
        scale: factor ``s`` applied to the margin-adjusted logits.
        weight: per-class weights used while :attr:`reweight` is true, or ``None``.
    """

    def __init__(self, margins: torch.Tensor, scale: float, weight: torch.Tensor | None = None):
        super().__init__()
        self.scale = scale
        self.register_buffer("margins", margins)
        self.register_buffer("weight", weight)
        self.reweight = weight is not None

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        # onehot * margins puts m_y in the target column and zeros elsewhere.
        adjusted = logits - F.one_hot(targets, logits.shape[1]) * self.margins
        weight = self.weight if self.reweight else None
        return F.cross_entropy(self.scale * adjusted, targets, weight=weight)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _counts(class_counts: list[int]) -> torch.Tensor:
    # float64 for exact weights; clamped to >= 1 so that an empty class never yields inf or NaN.
    return torch.tensor(class_counts, dtype=torch.float64).clamp(min=1)


def _log_prior(class_counts: list[int]) -> torch.Tensor:
    counts = _counts(class_counts)
    return (counts / counts.sum()).log()


def effective_number_weights(class_counts: list[int], beta: float) -> torch.Tensor:
    """Cui et al. (2019) class-balanced weights ``(1 - beta) / (1 - beta^n_c)``, summing to k.

    Example:
        >>> effective_number_weights([10, 10], beta=0.9).tolist()
        [1.0, 1.0]
    """
    counts = _counts(class_counts)
    weights = (1.0 - beta) / (1.0 - beta**counts)
    return (weights * len(counts) / weights.sum()).float()


# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------


@STRATEGIES.register
def none(*, class_counts: list[int]) -> Strategy:
    """Plain cross-entropy, no re-balancing (the baseline). No parameters."""
    return Strategy(criterion=AdjustedCrossEntropy())


@STRATEGIES.register(power=Interval(0, None))
def weighted_ce(*, class_counts: list[int], power: float = 1.0) -> Strategy:
    """Cross-entropy with sklearn ``compute_class_weight('balanced')`` weights (n / (k * count)).

    ``power`` tempers the weights, ``(n / (k * count)) ** power``: 1 is sklearn's "balanced",
    0.5 the square-root variant, 0 plain cross-entropy.
    """
    counts = _counts(class_counts)
    weight = (counts.sum() / (len(counts) * counts)) ** power
    return Strategy(criterion=AdjustedCrossEntropy(weight=weight.float()))


@STRATEGIES.register(
    beta=Interval(0, 1, high_open=True), loss=OneOf(("ce", "focal")), gamma=Interval(0, None)
)
def class_balanced(
    *, class_counts: list[int], beta: float = 0.999, loss: str = "ce", gamma: float = 2.0
) -> Strategy:
    """Class-balanced loss via the effective number of samples (Cui et al., CVPR 2019).

    Weights ``(1 - beta) / (1 - beta^n_c)``, normalised to sum to k; ``beta`` -> 0 is uniform,
    ``beta`` -> 1 approaches inverse frequency. ``loss`` is "ce" or "focal" (softmax focal loss
    with the weights as alpha and focusing parameter ``gamma``).
    """
    weight = effective_number_weights(class_counts, beta)
    if loss == "focal":
        return Strategy(criterion=FocalLoss(gamma=gamma, alpha=weight))
    return Strategy(criterion=AdjustedCrossEntropy(weight=weight))


@STRATEGIES.register(gamma=Interval(0, None))
def focal(
    *, class_counts: list[int], gamma: float = 2.0, alpha: list[float] | None = None
) -> Strategy:
    """Focal loss (Lin et al., ICCV 2017): -alpha_t (1 - p_t)^gamma log p_t, batch mean.

    ``gamma`` >= 0 down-weights easy examples; ``alpha`` is an optional list of k per-class
    weights. ``gamma=0`` without ``alpha`` is plain cross-entropy.
    """
    k = len(class_counts)
    if alpha is not None and len(alpha) != k:
        raise OctbenchError(
            f"The 'alpha' parameter of strategy 'focal' must be a list of {k} floats "
            f"(one per class). Got {alpha!r} instead."
        )
    alpha_t = None if alpha is None else torch.tensor(alpha, dtype=torch.float32)
    return Strategy(criterion=FocalLoss(gamma=gamma, alpha=alpha_t))


@STRATEGIES.register(
    max_margin=Interval(0, None),
    scale=Interval(0, None, low_open=True),
    drw_start=Interval(0, 1),
    beta=Interval(0, 1, high_open=True),
)
def ldam_drw(
    *,
    class_counts: list[int],
    max_margin: float = 0.5,
    scale: float = 30.0,
    drw_start: float = 0.8,
    beta: float = 0.9999,
) -> Strategy:
    """LDAM loss with deferred re-weighting (Cao et al., NeurIPS 2019).

    As published: the model's classifier becomes a normalised (cosine) linear layer, so logits
    are cosines in [-1, 1]; margins ``m_c`` proportional to ``n_c^(-1/4)``, the largest equal to
    ``max_margin``; margin-adjusted logits scaled by ``scale`` (the paper's code: ``s = 30``,
    ``max_m = 0.5``, ``NormedLinear``). From epoch ``int(drw_start * epochs)`` on, the loss uses
    class-balanced weights with effective-number ``beta``; before that it is unweighted.
    """
    # s = 30 belongs with cosine logits: on an ordinary linear head's unbounded logits it would
    # saturate the softmax (a loss of ~80 on random logits), hence cosine_head.
    margins = _counts(class_counts) ** -0.25
    margins = margins * (max_margin / margins.max())
    criterion = LDAMLoss(
        margins.float(), scale=scale, weight=effective_number_weights(class_counts, beta)
    )
    criterion.reweight = False

    def on_epoch_start(epoch: int, epochs: int) -> None:
        criterion.reweight = epoch >= int(drw_start * epochs)

    return Strategy(criterion=criterion, on_epoch_start=on_epoch_start, cosine_head=True)


@STRATEGIES.register
def balanced_softmax(*, class_counts: list[int]) -> Strategy:
    """Balanced softmax (Ren et al., NeurIPS 2020): CE on ``logits + log prior`` in training.

    The prior is the training class frequency ``count / n``. No parameters.
    """
    return Strategy(criterion=AdjustedCrossEntropy(offset=_log_prior(class_counts).float()))


@STRATEGIES.register(tau=Interval(0, None), mode=OneOf(("loss", "posthoc")))
def logit_adjust(*, class_counts: list[int], tau: float = 1.0, mode: str = "loss") -> Strategy:
    """Logit adjustment (Menon et al., ICLR 2021) with temperature ``tau``.

    ``mode="loss"`` trains with CE on ``logits + tau * log prior`` and evaluates raw logits;
    ``mode="posthoc"`` trains plain CE and adds ``-tau * log prior`` to the logits at evaluation.
    """
    offset = (tau * _log_prior(class_counts)).float()
    if mode == "posthoc":
        return Strategy(criterion=AdjustedCrossEntropy(), logit_offset=-offset)
    return Strategy(criterion=AdjustedCrossEntropy(offset=offset))


@STRATEGIES.register
def seed_weights(*, class_counts: list[int]) -> Strategy:
    """The seed project's CE weights [1, 1, 1, 3], kept only to reproduce that project.

    These weights up-weight NORMAL, the *majority* class of OCTMNIST -- a documented mistake;
    use ``weighted_ce`` for real re-weighting. Only defined for the 4 OCTMNIST classes.
    """
    if len(class_counts) != len(SEED_WEIGHTS):
        raise OctbenchError(
            f"Strategy 'seed_weights' has fixed weights for the {len(SEED_WEIGHTS)} OCTMNIST "
            f"classes (CNV, DME, DRUSEN, NORMAL), but the data has {len(class_counts)} classes. "
            "Use 'weighted_ce' instead."
        )
    return Strategy(criterion=AdjustedCrossEntropy(weight=torch.tensor(SEED_WEIGHTS)))
