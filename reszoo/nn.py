"""The residual primitive that every reszoo architecture is built on.

A residual block computes a *branch* ``F(x)`` and joins it with a *shortcut* ``S(x)``
(identity, or a projection when shapes change): ``y = F(x) + S(x)``. Its *plain twin*
(``residual=False``) is the same network without the addition, ``y = F(x)``, and without
the projection shortcut, which only exists to make the addition possible. Every domain
builds its blocks on :class:`ResidualBlock`, so the switch means the same thing everywhere
and :func:`residual_blocks` can find and count the skips of any model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from torch import Tensor, nn

__all__ = ["JoinHook", "ResidualBlock", "join_hook", "residual_blocks"]

# ``hook(block, branch, shortcut)``: observes a block's join; a tensor it returns replaces the join's
# output (``None`` leaves it alone). See :func:`join_hook`.
JoinHook = Callable[["ResidualBlock", Tensor, "Tensor | None"], "Tensor | None"]


class ResidualBlock(nn.Module):
    """Base class of reszoo's residual blocks.

    Subclasses compute their branch and call :meth:`join` with the shortcut. They keep
    their own submodule names (e.g. torchvision's ``conv1``/``bn1``/``downsample``), so
    upstream checkpoints load without renaming. What the plain twin drops is decided here, not
    in each block: a block builds its projection with :meth:`make_projection` (None in the plain
    twin) and passes :meth:`shortcut_of` to :meth:`join` (None in the plain twin, uncomputed).
    """

    # Hooks installed by :func:`join_hook` (analysis: norms, lesions). A class-level empty tuple, so
    # an unhooked block pays one attribute lookup and its state dict and pickles are unchanged.
    _join_hooks: tuple[JoinHook, ...] = ()

    def __init__(self, residual: bool = True) -> None:
        super().__init__()
        self.residual = residual

    def make_projection(self, needed: bool, build: Callable[[], nn.Module]) -> nn.Module | None:
        """The block's projection shortcut, ``build()``, where it ``needed`` one (shapes change, or the
        architecture always projects); None in the plain twin. A projection only exists to make the
        addition possible, so the plain twin has none: its state dict is the residual network's minus
        these modules, whatever the block calls them."""
        return build() if needed and self.residual else None

    def shortcut_of(self, x: Tensor, path: Callable[[Tensor], Tensor] | None = None) -> Tensor | None:
        """The shortcut ``S(x)`` to hand to :meth:`join`: ``path(x)`` (a projection, a resampling) or
        ``x`` itself; None in the plain twin, whose join adds nothing, so ``path`` is not computed."""
        if not self.residual:
            return None
        return x if path is None else path(x)

    def init_branch_scale(self, scale: Tensor) -> None:
        """Initialise a scale the branch's output ends with (a last BN's weight, SAGAN's ``gamma``): 0 where a
        skip carries the input, so the block starts as the identity; 1 in the plain twin, where the branch is
        all the block outputs and a 0 would hand zeros to every later layer."""
        nn.init.constant_(scale, 0.0 if self.residual else 1.0)

    def join(self, branch: Tensor, shortcut: Tensor | None) -> Tensor:
        """``branch + shortcut``, or ``branch`` alone in the plain twin (unless a hook replaces it)."""
        if self._join_hooks:
            added = shortcut if self.residual else None  # what this join adds: none in a plain twin
            for hook in self._join_hooks:
                out = hook(self, branch, added)
                if out is not None:
                    return out
        if not self.residual or shortcut is None:
            return branch
        return branch + shortcut

    def extra_repr(self) -> str:
        return f"residual={self.residual}"


def residual_blocks(model: nn.Module) -> Iterator[ResidualBlock]:
    """All residual blocks of ``model`` (plain twins included), in module order."""
    return (m for m in model.modules() if isinstance(m, ResidualBlock))


@contextmanager
def join_hook(blocks: Iterable[ResidualBlock], hook: JoinHook) -> Iterator[None]:
    """Call ``hook(block, branch, shortcut)`` in every join of ``blocks`` while the context is open.

    The hook sees the branch ``F(x)`` and the shortcut ``S(x)`` that the join adds to it (``None``
    in a plain twin, even where its block passes one); if it returns a tensor, the join returns
    that instead (a lesioned residual block returns its shortcut). Hooks nest: the innermost one
    that returns a tensor wins. They are removed on exit, also when the body raises.
    """
    hooked = list(blocks)
    for block in hooked:
        block._join_hooks = (hook, *block._join_hooks)
    try:
        yield
    finally:
        for block in hooked:
            hooks = list(block._join_hooks)
            hooks.pop(next(i for i, h in enumerate(hooks) if h is hook))  # this context's one only
            rest = tuple(hooks)
            if rest:
                block._join_hooks = rest
            else:  # back to the class default: no instance attribute left behind
                block.__dict__.pop("_join_hooks", None)
