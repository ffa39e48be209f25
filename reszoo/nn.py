"""The residual primitive that every reszoo architecture is built on.

A residual block computes a *branch* ``F(x)`` and joins it with a *shortcut* ``S(x)``
(identity, or a projection when shapes change): ``y = F(x) + S(x)``. Its *plain twin*
(``residual=False``) is the same network without the addition, ``y = F(x)``, and without
the projection shortcut, which only exists to make the addition possible. Every domain
builds its blocks on :class:`ResidualBlock`, so the switch means the same thing everywhere
and :func:`residual_blocks` can find and count the skips of any model.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import Tensor, nn

__all__ = ["ResidualBlock", "Residual", "residual_blocks"]


class ResidualBlock(nn.Module):
    """Base class of reszoo's residual blocks.

    Subclasses compute their branch and call :meth:`join` with the shortcut. They keep
    their own submodule names (e.g. torchvision's ``conv1``/``bn1``/``downsample``), so
    upstream checkpoints load without renaming.
    """

    def __init__(self, residual: bool = True) -> None:
        super().__init__()
        self.residual = residual

    def join(self, branch: Tensor, shortcut: Tensor | None) -> Tensor:
        """``branch + shortcut``, or ``branch`` alone in the plain twin."""
        if not self.residual or shortcut is None:
            return branch
        return branch + shortcut

    def extra_repr(self) -> str:
        return f"residual={self.residual}"


class Residual(ResidualBlock):
    """Wraps any module ``fn`` into ``x + fn(x)`` (pre-norm Transformer and MLP blocks)."""

    def __init__(self, fn: nn.Module, residual: bool = True) -> None:
        super().__init__(residual)
        self.fn = fn

    def forward(self, x: Tensor, *args: object, **kwargs: object) -> Tensor:
        return self.join(self.fn(x, *args, **kwargs), x)


def residual_blocks(model: nn.Module) -> Iterator[ResidualBlock]:
    """All residual blocks of ``model`` (plain twins included), in module order."""
    return (m for m in model.modules() if isinstance(m, ResidualBlock))


