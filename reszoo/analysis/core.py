"""Diagnostics of residual connections that work on any reszoo model.

Every reszoo architecture is built on :class:`reszoo.nn.ResidualBlock`, so these functions find the
blocks with :func:`reszoo.nn.residual_blocks` and instrument them in two ways only: forward
(pre-)hooks, to see a block's input and output, and :func:`reszoo.nn.join_hook`, to see (or
replace) the branch ``F(x)`` and shortcut ``S(x)`` where the block joins them. Nothing is
specific to a domain; residual models and their plain twins are measured the same way.

``inputs`` is what the model is called with: a tensor (``model(x)``), a tuple (``model(*inputs)``)
or a dict (``model(**inputs)``); every tensor in it has the batch on its first axis.

Each function returns plain data (a dataclass with ``to_dict()``); :mod:`reszoo.analysis.plots`
draws them. The lesion study is in :mod:`reszoo.analysis.lesions`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..nn import ResidualBlock, join_hook

__all__ = [
    "AnalysisError",
    "BlockInfo",
    "BranchRatio",
    "GradientCorrelation",
    "GradientFlow",
    "block_infos",
    "branch_ratio",
    "gradient_correlation",
    "gradient_flow",
    "named_blocks",
    "projection_loss",
]

Inputs = Tensor | tuple[Any, ...] | Mapping[str, Any]
Metric = Callable[[Tensor, Any], float]


class AnalysisError(InputError):
    """A model or its inputs cannot be analysed as asked (no residual blocks, unusable inputs)."""


# --------------------------------------------------------------------------- plumbing


def named_blocks(model: nn.Module) -> list[tuple[str, ResidualBlock]]:
    """``(qualified name, block)`` of every residual block, in module order (as ``residual_blocks``)."""
    blocks = [(name, m) for name, m in model.named_modules() if isinstance(m, ResidualBlock)]
    if not blocks:
        raise AnalysisError(f"{type(model).__name__} has no reszoo.nn.ResidualBlock: nothing to analyse")
    return blocks


def _call(model: nn.Module, inputs: Inputs) -> Any:
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, tuple):
        return model(*inputs)
    return model(inputs)


def _tensors(inputs: Inputs) -> list[Tensor]:
    values = inputs.values() if isinstance(inputs, Mapping) else inputs if isinstance(inputs, tuple) else (inputs,)
    return [v for v in values if isinstance(v, Tensor)]


def num_samples(inputs: Inputs) -> int:
    tensors = _tensors(inputs)
    if not tensors or tensors[0].ndim == 0:
        raise AnalysisError("inputs hold no batched tensor (the batch is the first axis of each tensor)")
    return tensors[0].shape[0]


def _slice(inputs: Inputs, start: int, stop: int) -> Inputs:
    """The samples ``start:stop`` of every batched tensor in ``inputs`` (other values kept)."""
    cut = lambda v: v[start:stop] if isinstance(v, Tensor) and v.ndim > 0 else v  # noqa: E731
    if isinstance(inputs, Mapping):
        return {k: cut(v) for k, v in inputs.items()}
    if isinstance(inputs, tuple):
        return tuple(cut(v) for v in inputs)
    return cut(inputs)


def _first_tensor(out: Any) -> Tensor:
    """The model's output tensor (the first one, for models returning tuples or dicts)."""
    if isinstance(out, Tensor):
        return out
    values = out.values() if isinstance(out, Mapping) else out if isinstance(out, tuple | list) else ()
    for v in values:
        if isinstance(v, Tensor):
            return v
    raise AnalysisError(f"the model returned {type(out).__name__}, not a tensor: pass a loss_fn/metric that reads it")


@contextmanager
def _mode(model: nn.Module, train: bool) -> Iterator[None]:
    """``model`` in train or eval mode for the body, then every module's flag and every buffer as
    they were: a diagnostic in train mode must not move BatchNorm's running statistics."""
    flags = {m: m.training for m in model.modules()}
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    model.train(train)
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, saved in buffers:
                buf.copy_(saved)
        for m, flag in flags.items():
            m.training = flag


def _wide(x: Tensor) -> Tensor:
    """``x`` detached, in float32 at least (bf16/fp16 activations summed in their own precision drift)."""
    x = x.detach()
    return x if x.dtype == torch.float64 else x.float()


def _per_sample_norm(x: Tensor) -> Tensor:
    return _wide(x).flatten(1).norm(dim=1) if x.ndim > 1 else _wide(x).abs()


# --------------------------------------------------------------------------- probe


@dataclass
class BlockInfo:
    """What one forward pass shows of a block.

    ``removal`` says how a lesion removes the block: ``"shortcut"`` (a residual block returns its
    shortcut instead of ``F(x) + S(x)``), ``"identity"`` (a plain block whose output has its
    input's shape returns its input), or ``"not removable"`` (a plain block that changes the
    shape, or a block the forward pass never called).
    """

    name: str
    residual: bool
    in_shape: list[int] | None
    out_shape: list[int] | None
    has_shortcut: bool
    removal: str

    @property
    def removable(self) -> bool:
        return self.removal != "not removable"


def _first_arg(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Tensor | None:
    if args and isinstance(args[0], Tensor):
        return args[0]
    return next((v for v in kwargs.values() if isinstance(v, Tensor)), None)


def block_infos(model: nn.Module, inputs: Inputs) -> list[BlockInfo]:
    """Shapes and shortcuts of every block, from one eval-mode pass over (at most 2 of) ``inputs``."""
    blocks = named_blocks(model)
    seen: dict[ResidualBlock, dict[str, Any]] = {b: {} for _, b in blocks}

    def pre(block: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        x = _first_arg(args, kwargs)
        seen[block].setdefault("in", list(x.shape) if x is not None else None)

    def post(block: nn.Module, args: Any, kwargs: Any, out: Any) -> None:
        seen[block].setdefault("out", list(out.shape) if isinstance(out, Tensor) else None)

    def on_join(block: ResidualBlock, branch: Tensor, shortcut: Tensor | None) -> None:
        seen[block]["shortcut"] = seen[block].get("shortcut", True) and shortcut is not None

    with ExitStack() as stack, _mode(model, False), torch.no_grad():
        for _, b in blocks:
            stack.callback(b.register_forward_pre_hook(pre, with_kwargs=True).remove)
            stack.callback(b.register_forward_hook(post, with_kwargs=True).remove)
        stack.enter_context(join_hook([b for _, b in blocks], on_join))
        _call(model, _slice(inputs, 0, min(2, num_samples(inputs))))
    infos = []
    for name, b in blocks:
        s = seen[b]
        shortcut = bool(s.get("shortcut", False))
        if "in" not in s:
            removal = "not removable"
        elif b.residual and shortcut:
            removal = "shortcut"
        elif s["in"] is not None and s["in"] == s.get("out"):
            removal = "identity"
        else:
            removal = "not removable"
        infos.append(BlockInfo(name, b.residual, s.get("in"), s.get("out"), shortcut, removal))
    return infos


# --------------------------------------------------------------------------- gradient flow


@dataclass
class GradientFlow:
    """Per block: the norm of the loss gradient w.r.t. the block's input (the whole batch's
    gradient tensor) and w.r.t. the block's own parameters, for one batch and loss."""

    blocks: list[str]
    input_grad_norm: list[float]
    param_grad_norm: list[float]
    loss: float
    train_mode: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def attenuation(self) -> float:
        """``log10(‖∂L/∂x‖ at the first block / at the last)``: below -1, the gradient reaching the
        first block is 10x weaker than at the last (vanishing); near 0, it flows unattenuated."""
        first, last = self.input_grad_norm[0], self.input_grad_norm[-1]
        if not (math.isfinite(first) and math.isfinite(last)) or (first == 0 and last == 0):
            return float("nan")  # a block the loss does not reach through its input (or no float input)
        return math.log10(first / last) if first > 0 and last > 0 else float("-inf" if first == 0 else "inf")


def _default_loss(out: Any, targets: Any) -> Tensor:
    return nn.functional.cross_entropy(_first_tensor(out).float(), targets)


def projection_loss(seed: int = 0) -> Callable[[Any, Any], Tensor]:
    """A loss for models without one (generators, continuous policies): ``⟨output, u⟩`` per sample,
    averaged, for a fixed random unit direction ``u`` (seeded) over the output's elements. Its
    gradient is a random projection of the model's Jacobian, so its norm per block shows how the
    output's sensitivity carries back through the blocks; the targets are not read."""
    cache: dict[tuple[int, ...], Tensor] = {}

    def loss(out: Any, targets: Any = None) -> Tensor:
        y = _first_tensor(out).float()
        shape = tuple(y.shape[1:])
        if shape not in cache:
            u = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
            cache[shape] = u / u.norm()
        return (y * cache[shape].to(y.device)).flatten(1).sum(1).mean()

    return loss


def gradient_flow(
    model: nn.Module,
    inputs: Inputs,
    targets: Any = None,
    *,
    loss_fn: Callable[[Any, Any], Tensor] | None = None,
    train: bool = True,
) -> GradientFlow:
    """Gradient norms per block for ``loss_fn(model(inputs), targets)`` (default: cross-entropy).

    ``train=True`` (the default) measures what a training step sees (BatchNorm on batch
    statistics, dropout on); the model's buffers and modes are restored afterwards. The
    parameters' ``.grad`` are not touched.
    """
    if loss_fn is None and targets is None:
        raise AnalysisError("gradient_flow needs targets (class indices for the default cross-entropy) or a loss_fn")
    loss_fn = loss_fn or _default_loss
    blocks = named_blocks(model)
    captured: dict[ResidualBlock, list[Tensor]] = {b: [] for _, b in blocks}

    def pre(block: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        x = _first_arg(args, kwargs)
        if x is None or not x.is_floating_point():
            return None
        if not x.requires_grad:
            # Nothing upstream needs a gradient (the block reads the model input itself): a leaf
            # in its place loses no graph and gives the gradient w.r.t. the block's input.
            leaf = x.detach().requires_grad_(True)
            captured[block].append(leaf)
            if args and args[0] is x:
                return (leaf, *args[1:]), kwargs
            return args, {k: (leaf if v is x else v) for k, v in kwargs.items()}
        captured[block].append(x)
        return None

    with ExitStack() as stack, _mode(model, train), torch.enable_grad():
        for _, b in blocks:
            stack.callback(b.register_forward_pre_hook(pre, with_kwargs=True).remove)
        loss = loss_fn(_call(model, inputs), targets)
        if not isinstance(loss, Tensor) or loss.ndim != 0:
            raise AnalysisError(f"loss_fn must return a scalar tensor, got {getattr(loss, 'shape', type(loss).__name__)}")
        xs = [x for _, b in blocks for x in captured[b]]
        params = [[p for p in b.parameters() if p.requires_grad] for _, b in blocks]
        flat = [p for ps in params for p in ps]
        # Inside the mode context: eval-mode BatchNorm saves its running statistics for backward,
        # and restoring them (even to equal values) would bump their version counters.
        grads = torch.autograd.grad(loss, xs + flat, allow_unused=True) if xs or flat else []
    x_grads, p_grads = iter(grads[: len(xs)]), iter(grads[len(xs):])

    def norm(gs: Iterable[Tensor | None]) -> float:
        return math.sqrt(sum(float(_wide(g).square().sum()) for g in gs if g is not None))

    input_norms = [norm([next(x_grads) for _ in captured[b]]) if captured[b] else float("nan") for _, b in blocks]
    param_norms = [norm([next(p_grads) for _ in ps]) for ps in params]
    return GradientFlow([n for n, _ in blocks], input_norms, param_norms, float(loss.detach()), train)


# --------------------------------------------------------------------------- branch / shortcut


@dataclass
class BranchRatio:
    """Per block, means over the samples of ``‖F(x)‖ / ‖x‖`` (``ratio``: how far the block is
    from the identity) and, where the block has a shortcut, of ``‖F(x)‖ / ‖S(x)‖``
    (``shortcut_ratio``; equal to ``ratio`` for an identity shortcut). Norms are per sample.
    In a plain twin ``F(x)`` is the block's whole pre-join output."""

    blocks: list[str]
    ratio: list[float]
    shortcut_ratio: list[float | None]
    branch_norm: list[float]
    input_norm: list[float]
    samples: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def branch_ratio(model: nn.Module, inputs: Inputs, *, batch_size: int = 256, train: bool = False) -> BranchRatio:
    """``‖F(x)‖ / ‖x‖`` per block on ``inputs`` (eval mode unless ``train``; no gradients)."""
    blocks = named_blocks(model)
    sums: dict[ResidualBlock, dict[str, float]] = {b: {} for _, b in blocks}
    current: dict[ResidualBlock, Tensor] = {}

    def add(block: ResidualBlock, key: str, values: Tensor) -> None:
        acc = sums[block]
        acc[key] = acc.get(key, 0.0) + float(values.sum())
        acc[key + "#n"] = acc.get(key + "#n", 0.0) + values.numel()

    def pre(block: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        x = _first_arg(args, kwargs)
        if x is not None:
            current[block] = _per_sample_norm(x)

    def on_join(block: ResidualBlock, branch: Tensor, shortcut: Tensor | None) -> None:
        f = _per_sample_norm(branch)
        add(block, "branch", f)
        if block in current:
            x = current[block]
            add(block, "input", x)
            add(block, "ratio", f / x.clamp_min(1e-12))
        if shortcut is not None:
            add(block, "shortcut_ratio", f / _per_sample_norm(shortcut).clamp_min(1e-12))

    n = num_samples(inputs)
    with ExitStack() as stack, _mode(model, train), torch.no_grad():
        for _, b in blocks:
            stack.callback(b.register_forward_pre_hook(pre, with_kwargs=True).remove)
        stack.enter_context(join_hook([b for _, b in blocks], on_join))
        for start in range(0, n, batch_size):
            _call(model, _slice(inputs, start, start + batch_size))

    def mean(b: ResidualBlock, key: str) -> float | None:
        acc = sums[b]
        return acc[key] / acc[key + "#n"] if acc.get(key + "#n") else None

    nan = float("nan")
    return BranchRatio(
        blocks=[name for name, _ in blocks],
        ratio=[_or(mean(b, "ratio"), nan) for _, b in blocks],
        shortcut_ratio=[mean(b, "shortcut_ratio") for _, b in blocks],
        branch_norm=[_or(mean(b, "branch"), nan) for _, b in blocks],
        input_norm=[_or(mean(b, "input"), nan) for _, b in blocks],
        samples=n,
    )


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


# --------------------------------------------------------------------------- shattered gradients


@dataclass
class GradientCorrelation:
    """Balduzzi et al. 2017 (arXiv:1702.08591), "shattered gradients": how alike the input gradients
    of a scalar output are at points along a line through each input (their cosine similarity), as
    a function of the distance between the points (``lags``, in steps of ``step`` times the input's
    norm). Near 1 at small lags: the gradient varies smoothly with the input; near 0: white noise."""

    lags: list[int]
    correlation: list[float]
    step: float
    points: int
    base_inputs: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _default_scalar(out: Any) -> Tensor:
    """Per sample: the logit of the class predicted at the middle of the line (``(N, C)`` outputs),
    else the sum of the sample's outputs."""
    out = _first_tensor(out).float()
    if out.ndim == 2:
        return out[:, out[out.shape[0] // 2].argmax()]
    return out.flatten(1).sum(1)


def _embedded(model: nn.Module, embedding: nn.Module, sample: Inputs) -> Tensor:
    """What ``embedding`` outputs for one sample (``model`` run once, no gradients)."""
    seen: list[Tensor] = []
    handle = embedding.register_forward_hook(lambda m, a, out: seen.append(out.detach()))
    try:
        with torch.no_grad():
            _call(model, sample)
    finally:
        handle.remove()
    if not seen:
        raise AnalysisError("the embedding module given to gradient_correlation never ran in the model's forward pass")
    return seen[0][0]


def gradient_correlation(
    model: nn.Module,
    inputs: Inputs,
    *,
    points: int = 32,
    radius: float = 0.25,
    lags: Sequence[int] = (1, 2, 4, 8, 16),
    base_inputs: int = 2,
    scalar_fn: Callable[[Any], Tensor] = _default_scalar,
    seed: int = 0,
    train: bool = False,
    embedding: nn.Module | None = None,
) -> GradientCorrelation:
    """For each of the first ``base_inputs`` samples ``x``: ``points`` inputs evenly spaced on a
    segment through ``x`` along a random direction, of half-length ``radius * ‖x‖``; the gradient
    of ``scalar_fn(model(line))`` w.r.t. each; the mean cosine similarity of gradients ``lag``
    points apart. Needs a float tensor input (images, waveforms, features), or for token ids
    (a tensor or dict of them) the model's ``embedding`` module: the segment is then drawn through
    the sample's embedding (that module's output, replaced on the way) and the gradients are taken
    w.r.t. it. Eval mode by default, so the points do not interact through BatchNorm."""
    if embedding is None and (not isinstance(inputs, Tensor) or not inputs.is_floating_point()):
        raise AnalysisError("gradient_correlation needs a float input tensor (it differentiates w.r.t. the input), "
                            "or the model's embedding module for token inputs")
    if points < 2:
        raise AnalysisError(f"points must be >= 2, got {points}")
    gen = torch.Generator().manual_seed(seed)
    t = torch.linspace(-1.0, 1.0, points)
    lags = [lag for lag in lags if 1 <= lag < points]
    sums = [0.0] * len(lags)
    n_base = min(base_inputs, num_samples(inputs))
    with _mode(model, train), torch.enable_grad():
        for i in range(n_base):
            sample = _slice(inputs, i, i + 1)
            x = inputs[i].detach() if embedding is None else _embedded(model, embedding, sample)
            d = torch.randn(x.shape, generator=gen).to(device=x.device, dtype=x.dtype)
            d = d / d.norm() * x.norm().clamp_min(1e-12) * radius
            line = (x.unsqueeze(0) + t.to(x).view(-1, *[1] * x.ndim) * d).requires_grad_(True)
            if embedding is None:
                out = model(line)
            else:  # the same sample at every point, its embedding moved along the segment
                repeated = {k: v.expand(points, *v.shape[1:]) for k, v in sample.items()} if isinstance(sample, Mapping) \
                    else sample.expand(points, *sample.shape[1:])
                handle = embedding.register_forward_hook(lambda m, a, o: line)
                try:
                    out = _call(model, repeated)
                finally:
                    handle.remove()
            (grad,) = torch.autograd.grad(scalar_fn(out).sum(), line)
            g = _wide(grad).flatten(1)
            g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-30)  # cosines: no centring, which degenerates in low dimensions
            for j, lag in enumerate(lags):
                sums[j] += float((g[:-lag] * g[lag:]).sum(1).mean())
    step = 2 * radius / (points - 1)
    return GradientCorrelation(lags, [s / n_base for s in sums], step, points, n_base)
