"""Tests for the class-imbalance strategies, generated from the registry where possible."""

from __future__ import annotations

import copy
import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from octbench.errors import OctbenchError
from octbench.strategies import STRATEGIES, build_strategy
from octbench.strategies.losses import effective_number_weights

OCT_COUNTS = [33484, 10213, 7754, 46026]  # OCTMNIST train: CNV, DME, DRUSEN, NORMAL
K = len(OCT_COUNTS)
ALLOWED_TYPES = {float, int, bool, str, list[float] | None}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def batch(n: int = 64, k: int = K, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g) * 3, torch.randint(0, k, (n,), generator=g)


def scaled_labels(counts: list[int], divisor: int = 10) -> torch.Tensor:
    return torch.cat([torch.full((c // divisor,), i) for i, c in enumerate(counts)])


def finite_loss_and_grad(strategy, logits, targets) -> torch.Tensor:
    logits = logits.detach().requires_grad_(True)
    loss = strategy.criterion(logits, targets)
    loss.backward()
    assert loss.dtype == torch.float32 and loss.ndim == 0 and torch.isfinite(loss)
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0
    return loss


# ---- registry-generated contract tests ----------------------------------------------------


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_signature_is_a_valid_schema(name):
    params = STRATEGIES.parameters(name)
    assert next(iter(params)) == "class_counts"
    for p in params.values():
        assert p.kind is p.KEYWORD_ONLY
        if p.name != "class_counts":
            assert p.annotation in ALLOWED_TYPES, f"{name}.{p.name}: {p.annotation}"
            assert p.default is not p.empty
    for key, constraint in STRATEGIES.constraints(name).items():
        assert key in params
        assert params[key].default in constraint, f"default of {name}.{key} breaks {constraint}"
    assert inspect.getdoc(STRATEGIES.get(name))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", STRATEGIES.names())
def test_loss_is_finite_and_differentiable(name, device):
    strategy = build_strategy(name, OCT_COUNTS)
    strategy.criterion.to(device)
    logits, targets = batch()
    logits, targets = logits.to(device), targets.to(device)
    finite_loss_and_grad(strategy, logits, targets)
    if strategy.on_epoch_start is not None:
        for epoch in range(10):
            strategy.on_epoch_start(epoch, 10)
        finite_loss_and_grad(strategy, logits, targets)


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_bf16_logits_give_float32_loss(name):
    strategy = build_strategy(name, OCT_COUNTS)
    logits, targets = batch()
    bf16 = finite_loss_and_grad(strategy, logits.bfloat16(), targets)
    fp32 = finite_loss_and_grad(strategy, logits.bfloat16().float(), targets)
    torch.testing.assert_close(bf16, fp32)
    # Under autocast a linear head emits bf16 logits; the loss must still be float32.
    head = torch.nn.Linear(8, K)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = strategy.criterion(head(torch.randn(16, 8)), targets[:16])
    loss.backward()
    assert loss.dtype == torch.float32 and all(
        torch.isfinite(p.grad).all() for p in head.parameters()
    )


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_criterion_tensors_are_buffers(name):
    # Buffers follow .to(device); a plain tensor attribute would silently stay on the CPU.
    criterion = copy.deepcopy(build_strategy(name, OCT_COUNTS).criterion).to("meta")
    assert all(b.device.type == "meta" for b in criterion.buffers())
    assert not any(isinstance(v, torch.Tensor) for v in vars(criterion).values())


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_empty_class_gives_finite_loss(name):
    counts = [100, 0, 50, 10]
    strategy = build_strategy(name, counts)
    for t in [strategy.logit_offset] + list(strategy.criterion.buffers()):
        assert t is None or torch.isfinite(t).all()
    logits, targets = batch()
    finite_loss_and_grad(strategy, logits, targets)
    if strategy.sampler is not None:
        labels = torch.tensor([0, 0, 0, 2, 2, 3])
        indices = strategy.sampler(labels, torch.Generator().manual_seed(0))
        assert len(indices) > 0 and ((indices >= 0) & (indices < len(labels))).all()


# ---- samplers ------------------------------------------------------------------------------

SAMPLERS = [n for n in STRATEGIES.names() if build_strategy(n, OCT_COUNTS).sampler is not None]


def test_samplers_are_registered():
    assert set(SAMPLERS) == {"oversample", "undersample"}


@pytest.mark.parametrize("name", SAMPLERS)
def test_sampler_is_in_range_redrawn_and_deterministic(name):
    sampler = build_strategy(name, OCT_COUNTS).sampler
    labels = scaled_labels(OCT_COUNTS, divisor=100)
    expected_len = {"oversample": len(labels), "undersample": K * (min(OCT_COUNTS) // 100)}[name]

    g = torch.Generator().manual_seed(0)
    first, second = sampler(labels, g), sampler(labels, g)
    for indices in (first, second):
        assert indices.dtype == torch.long and indices.shape == (expected_len,)
        assert ((indices >= 0) & (indices < len(labels))).all()
    assert not torch.equal(first, second), "each epoch must be a fresh draw"

    g = torch.Generator().manual_seed(0)
    assert torch.equal(sampler(labels, g), first) and torch.equal(sampler(labels, g), second)


def test_oversample_balances_classes():
    labels = scaled_labels(OCT_COUNTS)
    indices = build_strategy("oversample", OCT_COUNTS).sampler(
        labels, torch.Generator().manual_seed(0)
    )
    fractions = torch.bincount(labels[indices], minlength=K) / len(indices)
    # Each class ~ 1/4; the binomial std is ~0.0044 for n ~ 9.7k, so 0.03 is > 6 sigma.
    torch.testing.assert_close(fractions, torch.full((K,), 1 / K), atol=0.03, rtol=0)


def test_oversample_power_zero_is_uniform():
    labels = scaled_labels(OCT_COUNTS)
    sampler = build_strategy("oversample", OCT_COUNTS, power=0.0).sampler
    indices = sampler(labels, torch.Generator().manual_seed(0))
    fractions = torch.bincount(labels[indices], minlength=K) / len(indices)
    prior = torch.tensor(OCT_COUNTS) / sum(OCT_COUNTS)
    torch.testing.assert_close(fractions, prior.float(), atol=0.03, rtol=0)


def test_undersample_takes_min_count_of_each_class_without_replacement():
    labels = scaled_labels(OCT_COUNTS)
    indices = build_strategy("undersample", OCT_COUNTS).sampler(
        labels, torch.Generator().manual_seed(0)
    )
    assert len(indices.unique()) == len(indices)
    assert torch.bincount(labels[indices]).tolist() == [min(OCT_COUNTS) // 10] * K
    assert not torch.equal(labels[indices][:50], labels[indices][:50].sort().values), "shuffled"


# ---- definitions ---------------------------------------------------------------------------


def test_weighted_ce_matches_sklearn_balanced():
    weight = build_strategy("weighted_ce", OCT_COUNTS).criterion.weight
    n = sum(OCT_COUNTS)
    expected = torch.tensor([n / (K * c) for c in OCT_COUNTS])
    torch.testing.assert_close(weight, expected)
    sqrt = build_strategy("weighted_ce", OCT_COUNTS, power=0.5).criterion.weight
    torch.testing.assert_close(sqrt, expected.sqrt())


def test_weighted_ce_on_balanced_counts_is_plain_ce():
    criterion = build_strategy("weighted_ce", [250] * K).criterion
    assert torch.equal(criterion.weight, torch.ones(K))
    logits, targets = batch()
    torch.testing.assert_close(criterion(logits, targets), F.cross_entropy(logits, targets))


def test_focal_gamma_zero_is_ce():
    logits, targets = batch()
    criterion = build_strategy("focal", OCT_COUNTS, gamma=0.0).criterion
    torch.testing.assert_close(criterion(logits, targets), F.cross_entropy(logits, targets))


def test_focal_matches_definition():
    logits, targets = batch()
    alpha = [0.1, 0.2, 0.3, 0.4]
    criterion = build_strategy("focal", OCT_COUNTS, gamma=2.0, alpha=alpha).criterion
    p_t = logits.softmax(1).gather(1, targets[:, None]).squeeze(1)
    expected = (-torch.tensor(alpha)[targets] * (1 - p_t) ** 2 * p_t.log()).mean()
    torch.testing.assert_close(criterion(logits, targets), expected)


def test_focal_gradient_is_finite_when_confident():
    # gamma < 1 differentiates x**gamma at x = 1 - p_t = 0, which must not give NaN.
    criterion = build_strategy("focal", OCT_COUNTS, gamma=0.5).criterion
    logits = torch.tensor([[100.0, 0.0, 0.0, 0.0]], requires_grad=True)
    criterion(logits, torch.tensor([0])).backward()
    assert torch.isfinite(logits.grad).all()


def test_focal_alpha_of_wrong_length_is_a_user_error():
    with pytest.raises(
        OctbenchError, match=r"'alpha' parameter of strategy 'focal' must be a list of 4"
    ):
        build_strategy("focal", OCT_COUNTS, alpha=[0.25, 0.75])


def test_class_balanced_weights():
    # beta -> 0 gives uniform weights; larger beta moves towards inverse frequency.
    for beta in (0.0, 1e-6):
        uniform = build_strategy("class_balanced", OCT_COUNTS, beta=beta).criterion.weight
        torch.testing.assert_close(uniform, torch.ones(K))
    weight = build_strategy("class_balanced", OCT_COUNTS, beta=0.999).criterion.weight
    assert math.isclose(weight.sum().item(), K, rel_tol=1e-6)
    beta = 0.9999
    raw = torch.tensor([(1 - beta) / (1 - beta**c) for c in OCT_COUNTS], dtype=torch.float64)
    expected = (raw * K / raw.sum()).float()
    torch.testing.assert_close(
        build_strategy("class_balanced", OCT_COUNTS, beta=beta).criterion.weight, expected
    )
    focal = build_strategy("class_balanced", OCT_COUNTS, beta=beta, loss="focal").criterion
    torch.testing.assert_close(focal.alpha, expected)
    assert focal.gamma == 2.0


def test_balanced_softmax_is_ce_on_logits_plus_log_prior():
    logits, targets = batch()
    log_prior = (torch.tensor(OCT_COUNTS, dtype=torch.float32) / sum(OCT_COUNTS)).log()
    strategy = build_strategy("balanced_softmax", OCT_COUNTS)
    assert strategy.logit_offset is None
    torch.testing.assert_close(
        strategy.criterion(logits, targets), F.cross_entropy(logits + log_prior, targets)
    )


def test_logit_adjust_modes():
    logits, targets = batch()
    log_prior = (torch.tensor(OCT_COUNTS, dtype=torch.float32) / sum(OCT_COUNTS)).log()
    posthoc = build_strategy("logit_adjust", OCT_COUNTS, tau=1.5, mode="posthoc")
    torch.testing.assert_close(posthoc.logit_offset, -1.5 * log_prior)
    torch.testing.assert_close(posthoc.criterion(logits, targets), F.cross_entropy(logits, targets))
    loss = build_strategy("logit_adjust", OCT_COUNTS, tau=1.5, mode="loss")
    assert loss.logit_offset is None
    expected = F.cross_entropy(logits + 1.5 * log_prior, targets)
    torch.testing.assert_close(loss.criterion(logits, targets), expected)


def test_ldam_margins_and_deferred_reweighting():
    strategy = build_strategy("ldam_drw", OCT_COUNTS, max_margin=0.5, scale=30.0, drw_start=0.8)
    criterion = strategy.criterion
    margins = torch.tensor(OCT_COUNTS, dtype=torch.float64) ** -0.25
    torch.testing.assert_close(criterion.margins, (0.5 * margins / margins.max()).float())
    assert criterion.margins.max() == 0.5 and criterion.margins.argmax() == OCT_COUNTS.index(
        min(OCT_COUNTS)
    )

    logits, targets = batch()
    shifted = 30.0 * (logits - F.one_hot(targets, K) * criterion.margins)
    weight = effective_number_weights(OCT_COUNTS, 0.9999)
    epochs = 10  # DRW starts at int(0.8 * 10) = 8
    for epoch in range(epochs):
        strategy.on_epoch_start(epoch, epochs)
        assert criterion.reweight == (epoch >= 8)
        expected = F.cross_entropy(shifted, targets, weight=weight if epoch >= 8 else None)
        torch.testing.assert_close(criterion(logits, targets), expected)
    strategy.on_epoch_start(0, epochs)  # a new run resets it
    assert not criterion.reweight


def test_ldam_loss_on_a_known_case():
    """Cao et al. (2019), eq. 10 with their code's s = 30 on cosine logits, worked by hand."""
    strategy = build_strategy("ldam_drw", [100, 1])  # defaults: max_margin 0.5, scale 30
    assert strategy.cosine_head
    # margins C / n^(1/4) with the rarest class's = 0.5: 0.5 * (1/100)^(1/4) and 0.5
    small = 0.5 * 100 ** -0.25
    cosines, targets = torch.tensor([[0.5, 0.2], [0.1, 0.3]]), torch.tensor([0, 1])
    first = math.log1p(math.exp(30 * 0.2 - 30 * (0.5 - small)))  # -log softmax of the target
    second = math.log1p(math.exp(30 * 0.1 - 30 * (0.3 - 0.5)))
    assert strategy.criterion(cosines, targets).item() == pytest.approx((first + second) / 2,
                                                                        rel=1e-6)


def test_ldam_loss_on_a_fresh_cosine_head_does_not_saturate():
    from octbench.models import CosineLinear, build_model, classifier_head, use_cosine_head

    torch.manual_seed(0)
    strategy = build_strategy("ldam_drw", OCT_COUNTS)
    model = use_cosine_head(build_model("reference_cnn", width=0.25))
    assert isinstance(classifier_head(model), CosineLinear)
    logits = model.eval()(torch.randn(64, 1, 28, 28))
    assert logits.abs().max() <= 1 + 1e-6  # cosines
    targets = torch.randint(0, K, (64,))
    # at most log K + s * (max cosine gap 2 + margin 0.5); ~log K + 15 for cosines near 0
    assert strategy.criterion(logits, targets).item() < math.log(K) + 30 * 0.5 + 3


def test_seed_weights_reproduce_the_seed_project():
    assert build_strategy("seed_weights", OCT_COUNTS).criterion.weight.tolist() == [1, 1, 1, 3]
    with pytest.raises(OctbenchError, match="4 OCTMNIST classes"):
        build_strategy("seed_weights", [10, 20, 30])


def test_a_head_that_is_not_linear_cannot_become_a_cosine_head():
    from octbench.models import use_cosine_head

    class ConvHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Conv2d(1, 8, 3)
            self.head = torch.nn.Conv2d(8, 4, 1)

        def get_classifier(self):
            return self.head

    with pytest.raises(OctbenchError, match="has a Conv2d head, not a Linear layer"):
        use_cosine_head(ConvHead())
