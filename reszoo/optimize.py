"""The inference fast path: ``reszoo.load(name, optimize=True)`` (``reszoo predict --optimize``).

Three rewrites of a loaded model, in place, each exact or within a measured tolerance:

* **batch norm folded** into the convolution before it (eval-mode statistics become the
  convolution's weight and bias; the norm becomes an identity): the same function up to float
  rounding, one pass over the feature map fewer. The pairs are found by tracing the model with
  ``torch.fx`` (a convolution whose only use is the norm); a model that cannot be traced, or has
  no such pair (norms after activations, as in ECAPA-TDNN), is left as it is.
* **channels-last** weights for 2-D convolutions, the layout oneDNN's CPU kernels are fastest on.
* **bfloat16 autocast** of ``forward`` on CPUs with AVX512-BF16 (or AMX) instructions, outputs
  returned as float32: about three significant digits, so probabilities move by up to ~0.02 (the
  test measures it on real MNIST digits); ``bf16=False`` keeps float32.

The optimized model is for inference: its state dict is no longer the checkpoint's (folded norms),
so save or fine-tune the model loaded without ``optimize``. ``model.optimized`` says what was done.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch
from torch import nn

__all__ = ["cpu_has_bf16", "optimize"]

logger = logging.getLogger(__name__)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), where bf16 autocast pays off."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def _conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(conv, norm)`` module names where the norm's only input is the convolution's output and
    each is called once (traced with torch.fx; none when the model cannot be traced)."""
    import torch.fx

    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as err:  # data-dependent Python control flow: nothing folded, nothing wrong
        logger.info("optimize: %s cannot be traced with torch.fx (%s); batch norms not folded",
                    type(model).__name__, str(err).splitlines()[0] if str(err) else type(err).__name__)
        return []
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm1d | nn.BatchNorm2d):
            continue
        source = node.args[0] if node.args else None
        if (isinstance(source, torch.fx.Node) and source.op == "call_module" and len(source.users) == 1
                and isinstance(modules[source.target], nn.Conv1d | nn.Conv2d)
                and calls[source.target] == 1 and calls[node.target] == 1
                and type(modules[node.target]) in (nn.BatchNorm1d, nn.BatchNorm2d)):  # subclasses may do more
            pairs.append((source.target, node.target))
    return pairs


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, module)


def _fold_batchnorm(model: nn.Module) -> int:
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = 0
    for conv_name, bn_name in _conv_bn_pairs(model):
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        if bn.running_mean is None:  # a norm without running statistics normalises by the batch: not foldable
            continue
        _replace(model, conv_name, fuse_conv_bn_eval(conv, bn))
        _replace(model, bn_name, nn.Identity())
        folded += 1
    return folded


def _to_float32(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.float() if out.dtype == torch.bfloat16 else out
    if isinstance(out, tuple | list):
        return type(out)(_to_float32(o) for o in out)
    return out


def _autocast_forward(model: nn.Module) -> None:
    """``model.forward`` under CPU bfloat16 autocast, float32 out."""
    forward = model.forward

    @functools.wraps(forward)
    def bf16_forward(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return _to_float32(forward(*args, **kwargs))

    model.forward = bf16_forward  # an instance attribute: nn.Module.__call__ finds it first


def optimize(model: nn.Module, *, fold_batchnorm: bool = True, channels_last: bool = True,
             bf16: bool | None = None) -> nn.Module:
    """Rewrite ``model`` (eval mode, float32) for fast inference, in place, and return it (see the
    module docstring). ``bf16``: None uses it on a CPU model where :func:`cpu_has_bf16`."""
    if getattr(model, "optimized", None):
        return model
    model.eval()
    param = next(model.parameters(), None)
    on_cpu = param is None or param.device.type == "cpu"
    done: dict[str, Any] = {}
    if fold_batchnorm:
        done["folded_batchnorms"] = _fold_batchnorm(model)
    if channels_last and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        model.to(memory_format=torch.channels_last)
        done["channels_last"] = True
    if bf16 is None:
        bf16 = on_cpu and cpu_has_bf16()
    if bf16:
        if not on_cpu:
            from .errors import InputError

            raise InputError("bf16=True: the bfloat16 autocast of optimize is for CPU models; use dtype=torch.bfloat16 "
                             "for a model on an accelerator")
        _autocast_forward(model)
        done["bf16_autocast"] = True
    model.optimized = done
    return model
