"""Diagnostics of residual connections for any reszoo model (residual or plain twin, any domain).

- :func:`gradient_flow`: per block, the loss gradient's norm w.r.t. the block's input and its
  parameters (vanishing gradients);
- :func:`branch_ratio`: per block, ``‖F(x)‖ / ‖x‖`` on real inputs (how far from the identity);
- :func:`lesion_study`: the metric with each block, and with ``k`` random blocks, removed at test
  time (Veit et al. 2016, arXiv:1605.06431);
- :func:`gradient_correlation`: how correlated the input gradients of nearby inputs are
  ("shattered gradients", Balduzzi et al. 2017, arXiv:1702.08591).

Each returns a dataclass of per-block numbers (``to_dict()`` for JSON); :mod:`reszoo.analysis.plots`
draws them, :func:`reszoo.analysis.suite.analyze` runs them all, and ``reszoo analyze`` is the
command line. Torch only on import; matplotlib is imported when a plot is drawn.
"""

from . import core, lesions
from .core import *  # noqa: F403  (the public names are core's and lesions')
from .lesions import *  # noqa: F403

__all__ = [*core.__all__, *lesions.__all__]
