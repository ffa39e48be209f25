"""The model a run trains: the base entry, the base loaded with a head for the data's classes,
LoRA adapters, which parameters train and which stay frozen, and the optimizer's parameter groups."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..registry import Entry
from .adapters import Adapter, Collate, EncodedDataset
from .options import FinetuneError, FinetuneOptions, OptionsError

__all__ = ["apply_lora", "configure_trainable", "criterion_head", "deterministic_pools", "freeze_unused", "is_head",
           "load_model", "param_groups", "set_train_mode"]


def _head_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    prefixes = tuple(getattr(model, "head_prefixes", ()))
    return [(n, m) for n, m in model.named_modules() if n and (n + ".").startswith(prefixes)]


def is_head(name: str, prefixes: tuple[str, ...]) -> bool:
    return (name + ".").startswith(prefixes) or name.startswith(prefixes)


def load_model(name: str, entry: Entry, classes: tuple[str, ...], opts: FinetuneOptions) -> tuple[nn.Module, str]:
    """The base model with a head for ``classes``; returns it and what happened to the head."""
    from ..api import load

    n = len(classes)
    same_classes = entry.labels is not None and tuple(entry.labels) == classes
    if opts.head == "keep" and entry.num_classes != n:
        raise OptionsError(f"head='keep' needs the base's {entry.num_classes} classes; the data has {n}")
    # A headless base gets a new head; a LoRA adapter base is merged first (a plain model to train).
    model = load(name, num_classes=n, pretrained=opts.pretrained, merge=True)
    if not hasattr(model, "head_prefixes") or not _head_modules(model):
        raise FinetuneError(f"{entry.name}: {type(model).__name__} names no classifier head (head_prefixes); "
                            "only classification models can be fine-tuned")
    if not opts.pretrained:
        return model, "random init (from scratch)"
    if entry.num_classes != n:
        return model, f"new head for {n} classes (the base has {entry.num_classes or 'none'})"
    if opts.head == "new" or (opts.head == "auto" and not same_classes):
        # Same number of classes, other classes: the base's class weights would only mislead.
        for _, module in _head_modules(model):
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        return model, f"new head for {n} classes (the base's {n} classes are other ones)"
    return model, f"the base's head kept (the data has the base's {n} classes)"


def criterion_head(model: nn.Module, criterion: Any, opts: FinetuneOptions) -> str | None:
    """The head the ``criterion`` scores, in place of the model's linear one.

    A criterion that scores something else than a linear layer's logits (speech's AAM-softmax
    scores cosines) names its head: ``criterion.head``, a factory ``(in_features, num_classes) ->
    module``. The new head trains with the model. Returns what was done (for the run's record), or
    None when the criterion names no head."""
    make = getattr(criterion, "head", None)
    if make is None:
        return None
    what = getattr(make, "__name__", type(make).__name__)
    if opts.pretrained and opts.head == "keep":
        raise OptionsError(f"head='keep' keeps the base's linear head, but the criterion scores a {what}; "
                           "leave head at auto/new")
    if opts.lora:
        raise OptionsError(f"the criterion scores a {what} head, which a LoRA adapter (a linear head over the base) "
                           "cannot hold; train without lora")
    if opts.out is not None or opts.push_to is not None:
        # A saved model is rebuilt from its architecture, whose head is linear: the weights would not fit it.
        raise OptionsError(f"the criterion trains a {what} head, which reszoo's saved format cannot rebuild; "
                           "train without out=/push_to and keep the parts you need from result.model")
    heads = [(name, m) for name, m in _head_modules(model) if isinstance(m, nn.Linear)]
    if len(heads) != 1:
        raise FinetuneError(f"the criterion needs a {what} head in place of {type(model).__name__}'s linear head, "
                            f"but its head ({', '.join(n for n, _ in _head_modules(model))}) is not one linear layer")
    name, linear = heads[0]
    parent, _, attr = name.rpartition(".")
    new = make(linear.in_features, linear.out_features).to(linear.weight.device, linear.weight.dtype)
    setattr(model.get_submodule(parent) if parent else model, attr, new)
    return f"a {what}({linear.in_features}, {linear.out_features}) head for the criterion"


def apply_lora(model: nn.Module, opts: FinetuneOptions, head: str) -> tuple[nn.Module, str]:
    """LoRA adapters (reszoo/lora.py) on the base's layers; the head stays trainable in full."""
    from ..errors import InputError
    from ..lora import apply_lora as _apply, lora_summary

    try:
        _apply(model, rank=opts.lora_rank, alpha=opts.lora_alpha, dropout=opts.lora_dropout, targets=opts.lora_targets)
    except InputError as err:
        raise OptionsError(str(err)) from None
    return model, f"{head}; {lora_summary(model)}"


def _frozen_by_name(model: nn.Module, prefixes: list[str]) -> set[str]:
    """Parameters under the ``freeze`` prefixes (a module path or a parameter name); each prefix must name some."""
    names = [n for n, _ in model.named_parameters()]
    frozen: set[str] = set()
    for prefix in prefixes:
        found = {n for n in names if n == prefix or n.startswith(prefix.rstrip(".") + ".")}
        if not found:
            tops = sorted({n.split(".")[0] for n in names})
            raise OptionsError(f"freeze: no parameter of {type(model).__name__} is named {prefix!r} or lies under it "
                               f"(its top-level modules: {', '.join(tops)})")
        frozen |= found
    return frozen


def configure_trainable(model: nn.Module, opts: FinetuneOptions) -> int:
    frozen = _frozen_by_name(model, opts.freeze) if opts.freeze else set()
    if opts.lora:  # peft chose: the LoRA matrices and the head's trainable copy, nothing else
        for name, param in model.named_parameters():
            if name in frozen:
                param.requires_grad_(False)
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    prefixes = tuple(model.head_prefixes)
    count = 0
    for name, param in model.named_parameters():
        param.requires_grad_((not opts.freeze_backbone or is_head(name, prefixes)) and name not in frozen)
        count += param.numel() if param.requires_grad else 0
    if count == 0:
        raise FinetuneError("no trainable parameters (the head has none?)")
    return count


class _MeanPool(nn.AdaptiveAvgPool2d):
    """AdaptiveAvgPool2d to 1x1 as a mean over height and width: the same function, with a
    deterministic backward on CUDA (the pooling op's own raises under deterministic algorithms)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(-2, -1), keepdim=True)


def deterministic_pools(model: nn.Module, device: torch.device) -> int:
    """Under ``torch.use_deterministic_algorithms(True)`` on CUDA, global average pools become
    means (in place; no parameters change). Returns how many were changed."""
    if device.type != "cuda" or not torch.are_deterministic_algorithms_enabled():
        return 0
    count = 0
    for module in model.modules():
        size = module.output_size if isinstance(module, nn.AdaptiveAvgPool2d) else None
        if type(module) is nn.AdaptiveAvgPool2d and size in (1, (1, 1)):
            module.__class__ = _MeanPool
            count += 1
    return count


def set_train_mode(model: nn.Module, opts: FinetuneOptions) -> None:
    """Train mode, except what stays fixed: a frozen backbone (BN statistics and dropout
    included) and, with batchnorm='frozen', every BatchNorm's running statistics."""
    model.train()
    prefixes = tuple(model.head_prefixes)
    for name, module in model.named_modules():
        if opts.freeze_backbone and name and not is_head(name, prefixes):
            module.eval()
        # With LoRA the statistics stay the base's too: the adapter saves none, so the saved model
        # would otherwise not be the one trained.
        if (opts.batchnorm == "frozen" or opts.lora) and isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def param_groups(model: nn.Module, opts: FinetuneOptions) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases and normalisation scales (1-d parameters), as is
    usual; the head at ``head_lr`` when given (a fresh head learns faster than a trained backbone)."""
    prefixes = tuple(model.head_prefixes)
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((opts.head_lr is not None and is_head(name, prefixes), p.ndim >= 2), []).append(p)
    return [{"params": params, "weight_decay": opts.weight_decay if decay else 0.0,
             "lr": opts.head_lr if head else opts.lr}
            for (head, decay), params in sorted(groups.items())]


def freeze_unused(model: nn.Module, adapter: Adapter, dataset: EncodedDataset, collate: Collate) -> list[str]:
    """Freeze parameters that get no gradient (e.g. BERT's pooler under mean pooling): DDP needs
    every trainable parameter used, and an unused one is never updated anyway. Runs in eval
    mode, so no RNG and no BatchNorm statistics are touched."""
    was_training = model.training
    model.eval()
    batch = collate([dataset[i] for i in range(min(2, len(dataset)))])
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in batch["inputs"].items()}
    outputs = adapter.forward(model, inputs)
    outputs = outputs if isinstance(outputs, tuple | list) else (outputs,)
    sum(o.float().sum() for o in outputs if isinstance(o, Tensor) and o.is_floating_point()).backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    for n, p in model.named_parameters():
        if n in unused:
            p.requires_grad_(False)
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return unused
