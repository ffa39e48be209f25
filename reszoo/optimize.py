"""The inference fast path: ``reszoo.load(name, optimize=True)`` (``reszoo predict --optimize``).

Rewrites of a loaded model, in place, each exact or within a measured tolerance (per domain:
docs/inference.md):

* **batch norm folded** into the convolution before it (eval-mode statistics become the
  convolution's weight and bias; the norm becomes an identity): the same function up to float
  rounding, one pass over the feature map fewer. The pairs are found by tracing the model with
  ``torch.fx`` (a convolution whose only use is the norm); a model that cannot be traced, or has
  no such pair (norms after activations, as in ECAPA-TDNN), is left as it is.
* **channels-last** weights for 2-D convolutions, the layout oneDNN's CPU kernels are fastest on.
* **bfloat16 autocast** of the model's inference methods (``model.fast_methods``, declared by its
  class; ``forward`` by default; an empty tuple keeps a model in float32) on CPUs with
  AVX512-BF16 or AMX and on CUDA GPUs with bf16, outputs returned as float32: about three
  significant digits. The two layers bf16 rounding hurts most keep float32's precision, as
  quantized models keep them: the first weight layer sees its input (the raw pixels, features or
  embeddings) split into two bf16 terms, ``x = hi + lo``, one bf16 product with twice the input
  channels (about 16 significant bits of the input; rounding the input, not the weights, is what
  changed predictions: docs/inference.md), and the last linear layer (the logits that decide)
  computes in float32. A first layer the split cannot express (grouped convolutions, other
  padding modes, subclasses) computes in float32 instead. ``bf16=False`` keeps float32;
  ``float32_edges=False`` rounds both layers to bf16 as hand-tuned autocast does (outside the
  tolerances the zoo tests).
* **torch.compile with frozen weights** (inductor's ``freezing``: weights become constants,
  folded and pre-packed for oneDNN, with the convolutions' bias, activation and residual add
  fused into them) where it pays: ``compile=True`` compiles now; ``compile=None`` (the default)
  leaves the model eager and lets :func:`reszoo.predict` compile it once it knows how much work
  there is (:class:`CompilePolicy`). Freezing is switched on around every call of the compiled
  method: ``torch.compile(options={"freezing": True})`` alone does not freeze, because dynamo
  reads the global inductor flag when it decides whether the weights are constants
  (pytorch/pytorch#139272). Inductor's on-disk caches live under reszoo's cache folder: the
  generated kernels are reused by the next run, the frozen graph is rebuilt (on CPUs inductor does
  not cache a graph holding oneDNN-packed weights). A smaller batch than the first
  compiled one (the last, partial batch) is padded to that size by repeating its last input, so
  it reuses the graph instead of compiling another.

The optimized model is for inference: its state dict is no longer the checkpoint's (folded norms),
so save or fine-tune the model loaded without ``optimize``. ``model.optimized`` says what was done.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["COMPILE_PAYS_AFTER_S", "CompilePolicy", "compile_model", "compile_pays", "cpu_has_bf16",
           "cpu_isa", "fast_methods", "frozen_weights", "optimize", "split_bf16"]

logger = logging.getLogger(__name__)

# Compile when the eager run of the remaining inputs, extrapolated from the first batch, would
# take longer than this: on a 2-core CPU a compile takes ~10 s (ResNet-50) to ~50 s (ECAPA-TDNN),
# and a compiled forward saves 10-30 % of the eager time (docs/performance.md), not all of it.
COMPILE_PAYS_AFTER_S = 60.0


# --------------------------------------------------------------------------- the hardware


@functools.cache
def cpu_isa() -> frozenset[str]:
    """The bf16 instruction sets this CPU has, as torch and ``/proc/cpuinfo`` report them
    (``avx512_bf16``, ``amx_bf16``, ``amx_tile``); empty when neither tells."""
    found = set()
    if bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()):
        found.add("avx512_bf16")
    if bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()):
        found.add("amx_tile")
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    found |= set(line.split(":", 1)[1].split()) & {"avx512_bf16", "amx_bf16", "amx_tile"}
                    break
    except OSError:  # not Linux: torch's answer stands
        pass
    return frozenset(found)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), where bf16 autocast pays off."""
    return bool(cpu_isa())


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _bf16_pays(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_bf16()


def compile_pays(device: torch.device | str) -> bool:
    """Whether compiling with frozen weights pays off on ``device``: a CUDA GPU, or a CPU with
    bf16 instructions (where inductor's oneDNN bf16 kernels and fused graphs beat eager) and a
    C++ compiler for inductor's CPU code."""
    device = torch.device(device)
    if device.type == "cuda":
        return True
    return device.type == "cpu" and cpu_has_bf16() and shutil.which(os.environ.get("CXX", "g++")) is not None


def fast_methods(model: nn.Module) -> tuple[str, ...]:
    """The methods the fast path runs in bf16 and compiles: the model class's ``fast_methods``
    (its inference entry points: ``forward``, and e.g. an encoder's ``forward_features``)."""
    return tuple(getattr(model, "fast_methods", ("forward",)))


# --------------------------------------------------------------------------- rewrites


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


def _autocast(model: nn.Module, name: str, device_type: str) -> None:
    """``model.<name>`` under bfloat16 autocast, float32 out (an instance attribute: found before
    the class's method, and by ``nn.Module.__call__`` for ``forward``)."""
    method = getattr(model, name)

    @functools.wraps(method)
    def bf16_method(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type, dtype=torch.bfloat16):
            return _to_float32(method(*args, **kwargs))

    setattr(model, name, bf16_method)


def _edge_layers(model: nn.Module) -> list[str]:
    """The first weight layer (a convolution or linear layer, in module order) and the last linear
    layer: the layers bf16 rounding hurts most (the raw input; the logits that decide), and the
    cheapest to keep at float32 precision, as quantization keeps them."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear)]
    linears = [name for name, m in layers if isinstance(m, nn.Linear)]
    return list(dict.fromkeys(([layers[0][0]] if layers else []) + linears[-1:]))


def _float32_layer(layer: nn.Module) -> None:
    """``layer`` computed in float32 inside a bf16 autocast region (its input cast up)."""
    forward = layer.forward

    @functools.wraps(forward)
    def float32_forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        with torch.autocast(x.device.type, enabled=False):
            return forward(x.float() if x.is_floating_point() else x, *args, **kwargs)

    layer.forward = float32_forward


def _splits_input(layer: nn.Module) -> bool:
    """Whether :func:`_split_input_layer` can express ``layer``: a plain linear layer, or a plain
    1-D/2-D convolution without groups and with zero padding (the split doubles the input channels)."""
    if type(layer) is nn.Linear:
        return True
    return type(layer) in (nn.Conv1d, nn.Conv2d) and layer.groups == 1 and layer.padding_mode == "zeros"


def split_bf16(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x`` as two bf16 terms concatenated along ``dim``, ``hi = bf16(x)``, ``lo = bf16(x - hi)``:
    ``hi + lo`` keeps about 16 of float32's 24 significant bits, where ``bf16(x)`` keeps 8."""
    hi = x.to(torch.bfloat16)
    return torch.cat([hi, (x.float() - hi.float()).to(torch.bfloat16)], dim)


def _split_input_layer(layer: nn.Module) -> None:
    """``layer`` (:func:`_splits_input`) under bf16 autocast as one bf16 product over its input split
    into ``hi + lo`` (:func:`split_bf16`) against its weight repeated for both: the input keeps
    float32's precision to about 16 bits, the weight and the output are bf16, at twice the layer's
    bf16 cost (oneDNN pads a 3-channel image to more channels anyway, so ResNet-50's stem costs
    about 1.4x, where float32 costs 3.5x). Outside autocast the layer is left as it is."""
    forward = layer.forward
    linear = isinstance(layer, nn.Linear)

    @functools.wraps(forward)
    def split_forward(x: torch.Tensor) -> torch.Tensor:
        if not (x.is_floating_point() and torch.is_autocast_enabled(x.device.type)):
            return forward(x)
        weight = layer.weight.to(torch.bfloat16)
        weight = torch.cat([weight, weight], 1)  # [out, in, ...]: the input dimension is 1 for both kinds
        bias = None if layer.bias is None else layer.bias.to(torch.bfloat16)
        with torch.autocast(x.device.type, enabled=False):
            if linear:
                return nn.functional.linear(split_bf16(x, -1), weight, bias)
            if x.dim() == 4 and layer.weight.is_contiguous(memory_format=torch.channels_last):
                x = x.contiguous(memory_format=torch.channels_last)  # the split made in the layout the kernel reads
            return layer._conv_forward(split_bf16(x, 1), weight, bias)

    layer.forward = split_forward


# --------------------------------------------------------------------------- compiling


def _use_reszoo_cache() -> None:
    """Inductor's on-disk caches under reszoo's cache folder (unless the user chose a folder)."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        from .hub import cache_dir

        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir() / "inductor")


def _batch_size(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    """The common leading size of the tensor arguments, None when they have none."""
    sizes = {a.shape[0] for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor) and a.dim() > 0}
    return sizes.pop() if len(sizes) == 1 else None


def _pad(value: Any, n: int, size: int) -> Any:
    """A batch of ``n`` rows grown to ``size`` by repeating its last row (a valid input, so a
    padded text keeps a valid mask); other values as they are."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == n:
        return torch.cat([value, value[-1:].expand(size - n, *value.shape[1:])])
    return value


def _cut(out: Any, n: int, size: int) -> Any:
    if isinstance(out, torch.Tensor):
        return out[:n] if out.dim() > 0 and out.shape[0] == size else out
    if isinstance(out, tuple | list):
        return type(out)(_cut(o, n, size) for o in out)
    return out


class _Compiled:
    """A compiled method with static batch shapes: the largest batch seen so far sets the size
    that smaller batches are padded to; the padded rows are cut from the outputs."""

    def __init__(self, eager: Any) -> None:
        self.eager = eager
        self.compiled = torch.compile(eager, options={"freezing": True})
        self.size = 0
        functools.update_wrapper(self, eager)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if torch.compiler.is_compiling():  # called from inside another compiled method: traced inline
            return self.eager(*args, **kwargs)
        n = _batch_size(args, kwargs)
        if n is None or n >= self.size:
            self.size = max(self.size, n or 0)
            return self._frozen(*args, **kwargs)
        args = tuple(_pad(a, n, self.size) for a in args)
        kwargs = {k: _pad(v, n, self.size) for k, v in kwargs.items()}
        return _cut(self._frozen(*args, **kwargs), n, self.size)

    def _frozen(self, *args: Any, **kwargs: Any) -> Any:
        with frozen_weights():
            return self.compiled(*args, **kwargs)


def frozen_weights() -> contextlib.AbstractContextManager[None]:
    """Inductor's global ``freezing`` flag on, for calls of a ``torch.compile``-d function: dynamo
    treats the weights as constants only when that flag is on while it traces; the compile option
    ``options={"freezing": True}`` reaches inductor, not dynamo (pytorch/pytorch#139272)."""
    from torch._inductor import config

    return config.patch(freezing=True)


def compile_model(model: nn.Module) -> nn.Module:
    """Compile the model's :func:`fast_methods` with frozen weights (in place; the first call of
    each compiles, reusing the kernels of earlier runs from the on-disk cache). Frozen weights apply when
    the model runs without gradients (``torch.inference_mode``/``no_grad``), as prediction does."""
    done = getattr(model, "optimized", None)
    if done is not None and done.get("compile") == "compiled":
        return model
    _use_reszoo_cache()
    model.eval()
    for name in fast_methods(model):
        setattr(model, name, _Compiled(getattr(model, name)))
    if done is None:
        model.optimized = done = {}
    done["compile"] = "compiled"
    return model


@dataclass
class CompilePolicy:
    """When :func:`reszoo.predict` compiles a model optimized with ``compile=None``: on hardware
    where compiling pays (:func:`compile_pays`) and once the first batch, run eagerly, shows that
    the remaining inputs would take over ``after_s`` seconds eagerly. ``decided`` once it has
    chosen (compiled or not)."""

    model: nn.Module
    total: int
    after_s: float | None = None  # None: COMPILE_PAYS_AFTER_S
    decided: bool = False

    @classmethod
    def wanted(cls, model: Any, total: int) -> CompilePolicy | None:
        """A policy for ``model``, or None when it is not waiting for one (not optimized, compiled
        already, or compiling switched off)."""
        done = getattr(model, "optimized", None)
        if not isinstance(done, dict) or done.get("compile") != "auto":
            return None
        return cls(model, total)

    def after_batch(self, started: float, done: int) -> None:
        """The first batch (``done`` inputs) took since ``started``: compile now if the rest pays."""
        if self.decided:
            return
        self.decided = True
        seconds = time.perf_counter() - started
        remaining = seconds / max(done, 1) * (self.total - done)
        pays = compile_pays(_device(self.model))
        if pays and remaining > (COMPILE_PAYS_AFTER_S if self.after_s is None else self.after_s):
            logger.info("optimize: compiling (%d inputs left, ~%.0f s eagerly)", self.total - done, remaining)
            compile_model(self.model)
        else:
            self.model.optimized["compile"] = "eager (did not pay)" if pays else "eager (no gain on this hardware)"


# --------------------------------------------------------------------------- the switch


def optimize(model: nn.Module, *, fold_batchnorm: bool = True, channels_last: bool = True,
             bf16: bool | None = None, float32_edges: bool = True, compile: bool | None = None) -> nn.Module:
    """Rewrite ``model`` (eval mode, float32) for fast inference, in place, and return it (see the
    module docstring). ``bf16``: None uses it where the hardware computes bf16 natively (a CPU
    with AVX512-BF16/AMX, a CUDA GPU with bf16) and the model has fast methods;
    ``float32_edges``: the first and last weight layers keep float32 precision under bf16 (the first
    sees its input split into two bf16 terms, the last computes in float32). ``compile``: True
    compiles now, False never, None lets :func:`reszoo.predict` decide from the input count."""
    if getattr(model, "optimized", None):  # optimized already: only the compile choice can change
        if compile:
            compile_model(model)
        elif compile is False and model.optimized.get("compile") == "auto":
            model.optimized["compile"] = "off"
        return model
    model.eval()
    device = _device(model)
    done: dict[str, Any] = {}
    if fold_batchnorm:
        done["folded_batchnorms"] = _fold_batchnorm(model)
    if channels_last and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        model.to(memory_format=torch.channels_last)
        done["channels_last"] = True
    methods = fast_methods(model)
    if bf16 is None:
        bf16 = bool(methods) and _bf16_pays(device)
    if bf16:
        if device.type not in ("cpu", "cuda"):
            from .errors import InputError

            raise InputError(f"bf16=True: the bfloat16 autocast of optimize runs on CPUs and CUDA GPUs, not {device.type}")
        for name in methods:
            _autocast(model, name, device.type)
        split, float32 = [], []
        edges = _edge_layers(model) if float32_edges else []
        for i, name in enumerate(edges):
            layer = model.get_submodule(name)
            last_linear = isinstance(layer, nn.Linear) and i == len(edges) - 1  # the logits: float32
            if i == 0 and not last_linear and _splits_input(layer):
                _split_input_layer(layer)
                split.append(name)
            else:
                _float32_layer(layer)
                float32.append(name)
        done["bf16_autocast"] = True
        done["split_input_layers"] = split
        done["float32_layers"] = float32
    done["compile"] = "off" if compile is False else "auto"
    model.optimized = done
    if compile:
        compile_model(model)
    return model
