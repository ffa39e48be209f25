"""Inference for rl agents: what ``reszoo predict`` and ``reszoo export`` do with them.

An input is one observation: numbers separated by commas or spaces (``"0.01,0.2,-0.03,0.1"``), a
file of them (one observation per non-blank line, named ``FILE:LINE``), or an array or tensor
of the agent's observation shape.

* discrete agents: a policy is a classifier over actions, so the rows are a classifier's,
  ``{input, rank, label, prob}`` for the ``top_k`` actions, plus ``action`` (the action index;
  ``label`` is its name where the model has action labels, else the index as text) and
  ``value`` (the critic's state value);
* continuous agents: one row ``{input, action, q}``: the deterministic action and the twin Q
  estimates of it (lists of numbers).

Light on import (torch is imported when predicting): the package re-exports :func:`predict`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..predict import Options, Task, classify_rows, domain_predict
from ..rows import read_lines

if TYPE_CHECKING:
    from ..export import ExportSpec


def _parse_observation(text: str) -> list[float]:
    from .agents import ObservationError

    try:
        return [float(v) for v in text.replace(",", " ").split()]
    except ValueError as exc:
        raise ObservationError(f"could not read observation {text!r}: give numbers separated by commas") from exc


def _expand(arg: str) -> Any:
    if "\n" in arg or len(arg) > 4096:
        return None
    try:
        return read_lines(Path(arg)) if Path(arg).is_file() else None
    except (OSError, ValueError):  # not a name any file system takes
        return None


def _agent(model: Any) -> Any:
    from .agents import Agent

    if not isinstance(model, Agent):
        raise TypeError(f"reszoo.rl.predict needs an rl agent, got {type(model).__name__}")
    return model


def task(model: Any, options: Options) -> Task:
    """How ``model`` predicts: observations parsed and checked in the loader, the agent run in batches."""
    import torch

    from ..errors import InputError
    from .agents import ObservationError, as_observation_batch
    from .models import SquashedGaussianActorCritic

    agent = _agent(model)
    if options.reference is not None:
        raise InputError("reference= applies to embedding models, not to rl agents")
    param = next(agent.parameters())

    def read(value: Any, index: int) -> torch.Tensor:
        obs = _parse_observation(value) if isinstance(value, str) else value
        batch, single = as_observation_batch(obs, agent.observation_shape, agent.observation_dtype,
                                             owner=type(agent).__name__)
        if not single:
            raise ObservationError(f"an input holds {batch.shape[0]} observations; give one observation per input")
        return batch

    def to_model(batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(param.device)
        return batch.to(param.dtype) if batch.is_floating_point() else batch

    if isinstance(agent, SquashedGaussianActorCritic):
        def run(batch: torch.Tensor) -> list[list[dict[str, Any]]]:
            obs = to_model(batch)
            action = agent(obs)
            q = agent.q_values(obs, action).T
            return [[{"action": [round(v, 6) for v in a], "q": [round(v, 6) for v in qs]}]
                    for a, qs in zip(action.float().tolist(), q.float().tolist(), strict=True)]

        fields: tuple[str, ...] = ("input", "action", "q")
    else:
        labels = getattr(agent, "labels", None)

        def run(batch: torch.Tensor) -> list[list[dict[str, Any]]]:
            logits, value = agent(to_model(batch))
            groups = classify_rows(logits.float().softmax(-1), labels, options.top_k)
            top = logits.float().topk(min(options.top_k, logits.shape[-1]), dim=-1).indices.tolist()
            return [[{**row, "action": action, "value": round(v, 6)} for row, action in zip(group, actions, strict=True)]
                    for group, actions, v in zip(groups, top, value.float().tolist(), strict=True)]

        fields = ("input", "rank", "label", "prob", "action", "value")
    return Task(fields=fields, read=read, collate=torch.cat, run=run, kind="observation", expand=_expand)


def predict(model: Any, inputs: list[Any], top_k: int = 5, **options: Any) -> list[dict[str, Any]]:
    """Rows for every observation (see :func:`reszoo.predict`, whose options this takes), as a list."""
    return domain_predict(task, model, inputs, top_k, **options)


def export_spec(model: Any) -> ExportSpec:
    """The agent's network, ``forward(obs)``: ``(logits, value)`` for discrete agents, the
    deterministic action for continuous ones; batch dynamic. ``act`` (sampling, numpy in and out)
    and the environment loop (gymnasium) stay in Python."""
    import torch

    from ..export import ExportSpec
    from .models import SquashedGaussianActorCritic

    agent = _agent(model)
    param = next(agent.parameters())

    def observations(n: int, seed: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        shape = (n, *agent.observation_shape)
        if agent.observation_dtype == torch.uint8:
            return {"obs": torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8).to(param.device)}
        obs = torch.randn(shape, generator=gen)
        norm = getattr(agent, "obs_norm", None)
        if norm is not None:  # observations as the agent saw them: around its running statistics
            obs = norm.running_mean.cpu() + obs * norm.running_var.cpu().sqrt()
        return {"obs": obs.to(param.device, param.dtype)}

    outputs = ("action",) if isinstance(agent, SquashedGaussianActorCritic) else ("logits", "value")
    return ExportSpec(module=agent, example=observations(2, 0), checks=[observations(5, 1), observations(1, 2)],
                      outputs=outputs, dynamic={"obs": {0: "batch"}})
