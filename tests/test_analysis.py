"""reszoo.analysis: gradient flow, branch ratio, lesions and gradient correlation on tiny models whose
answers are known by hand; then the bundled MNIST models, an RL model, and ``reszoo analyze``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import reszoo
from conftest import need_data
from reszoo.analysis import (
    AnalysisError,
    block_infos,
    branch_ratio,
    gradient_correlation,
    gradient_flow,
    lesion_study,
    lesioned,
)
from reszoo.analysis.data import image_data, labelled_data
from reszoo.analysis.plots import plot_branch_ratio, plot_gradient_correlation, plot_gradient_flow, plot_lesion
from reszoo.cli import main
from reszoo.image.models import ResNet
from reszoo.nn import ResidualBlock, join_hook, residual_blocks

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "examples" / "digits"


class LinearBlock(ResidualBlock):
    """``y = W x + S(x)``: identity shortcut, or a projection ``P`` when the width changes."""

    def __init__(self, weight: Tensor, residual: bool = True, proj: Tensor | None = None) -> None:
        super().__init__(residual)
        self.lin = nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=weight.dtype)
        self.lin.weight.data.copy_(weight)
        self.proj = None
        if proj is not None and residual:
            self.proj = nn.Linear(proj.shape[1], proj.shape[0], bias=False, dtype=proj.dtype)
            self.proj.weight.data.copy_(proj)

    def forward(self, x: Tensor) -> Tensor:
        return self.join(self.lin(x), x if self.proj is None else self.proj(x))


def chain(scales: list[float], residual: bool, dim: int = 3) -> nn.Sequential:
    """Blocks ``x -> a_k x (+ x)``, in float64 so that hand-computed values match to 1e-12."""
    eye = torch.eye(dim, dtype=torch.float64)
    return nn.Sequential(*(LinearBlock(a * eye, residual) for a in scales)).double()


def dot_loss(out: Tensor, c: Tensor) -> Tensor:
    return (out * c).sum()


# --------------------------------------------------------------------------- join_hook


def test_join_hook_nests_and_leaves_nothing_behind() -> None:
    block = LinearBlock(2 * torch.eye(2))
    x = torch.ones(1, 2)
    seen = []
    with join_hook([block], lambda b, f, s: seen.append("outer")):
        with join_hook([block], lambda b, f, s: s * 10):  # the innermost hook returning a tensor wins
            assert block(x).tolist() == [[10.0, 10.0]]
        assert block(x).tolist() == [[3.0, 3.0]] and seen == ["outer"]  # inner removed, outer still observing
    assert "_join_hooks" not in block.__dict__ and block(x).tolist() == [[3.0, 3.0]] and seen == ["outer"]
    with pytest.raises(RuntimeError), join_hook([block], lambda b, f, s: f):
        raise RuntimeError("boom")
    assert "_join_hooks" not in block.__dict__
    plain, shortcuts = LinearBlock(2 * torch.eye(2), residual=False), []  # its forward passes x; its join drops it
    with join_hook([plain], lambda b, f, s: shortcuts.append(s)):
        assert plain(x).tolist() == [[2.0, 2.0]]
    assert shortcuts == [None]  # hooks see what the join adds: nothing in a plain twin


# --------------------------------------------------------------------------- gradient flow


def test_gradient_flow_of_a_scalar_chain_is_the_product_of_the_slopes() -> None:
    # L = c . x_3, x_{k+1} = (1 + a) x_k (residual) or a x_k (plain), a = 0.5:
    # dL/dx_k = prod_{j>=k} slope_j c; dL/dW_k = (dL/dx_{k+1}) x_k^T.
    c = torch.tensor([[1.0, 2.0, 2.0]], dtype=torch.float64)  # |c| = 3
    x = torch.tensor([[2.0, 0.0, 0.0]], dtype=torch.float64)  # |x| = 2
    res = gradient_flow(chain([0.5] * 3, True), x, c, loss_fn=dot_loss)
    plain = gradient_flow(chain([0.5] * 3, False), x, c, loss_fn=dot_loss)
    assert res.blocks == ["0", "1", "2"]
    assert res.input_grad_norm == pytest.approx([3 * 1.5**3, 3 * 1.5**2, 3 * 1.5], rel=1e-12)
    assert plain.input_grad_norm == pytest.approx([3 * 0.5**3, 3 * 0.5**2, 3 * 0.5], rel=1e-12)
    assert res.param_grad_norm == pytest.approx([3 * 1.5**2 * 2, 3 * 1.5 * 2 * 1.5, 3 * 2 * 1.5**2], rel=1e-12)
    assert plain.param_grad_norm == pytest.approx([3 * 0.5**2 * 2, 3 * 0.5 * 2 * 0.5, 3 * 2 * 0.5**2], rel=1e-12)
    assert plain.attenuation == pytest.approx(math.log10(0.25)) and res.attenuation == pytest.approx(math.log10(2.25))
    assert res.loss == pytest.approx(2 * 1.5**3)


def test_gradient_flow_matches_explicit_matrix_products() -> None:
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(4, 4, generator=gen, dtype=torch.float64) * 0.3 for _ in range(4)]
    x = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    c = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    model = nn.Sequential(*(LinearBlock(w) for w in weights)).double()
    flow = gradient_flow(model, x, c, loss_fn=dot_loss)
    maps = [torch.eye(4, dtype=torch.float64) + w for w in weights]  # x_{k+1} = x_k M_k^T
    acts = [x]
    for m in maps:
        acts.append(acts[-1] @ m.T)
    grads = [c]  # dL/dx_4, then backwards: dL/dx_k = dL/dx_{k+1} M_k
    for m in reversed(maps):
        grads.insert(0, grads[0] @ m)
    assert flow.input_grad_norm == pytest.approx([float(g.norm()) for g in grads[:4]], rel=1e-10)
    assert flow.param_grad_norm == pytest.approx([float((grads[k + 1].T @ acts[k]).norm()) for k in range(4)], rel=1e-10)
    assert all(p.grad is None for p in model.parameters())  # autograd.grad, not .backward()


def test_gradient_flow_in_train_mode_restores_batchnorm_and_modes() -> None:
    torch.manual_seed(0)
    model = ResNet("basic", (2, 2), widths=(4, 8), stem_width=4, stem_kernel=3, stem_stride=1, stem_pool=False,
                   num_classes=10, zero_init_last=False).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flow = gradient_flow(model, torch.randn(8, 3, 8, 8), torch.arange(8) % 10)
    assert len(flow.blocks) == 4 and all(v > 0 and math.isfinite(v) for v in flow.input_grad_norm + flow.param_grad_norm)
    assert not any(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # running stats untouched
    with pytest.raises(AnalysisError, match="needs targets"):
        gradient_flow(model, torch.randn(2, 3, 8, 8))


# --------------------------------------------------------------------------- branch ratio


def test_branch_ratio_of_scaled_identities_is_the_scale() -> None:
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = branch_ratio(chain([0.5, 2.0, 0.1], True), x, batch_size=4)  # two batches: 4 + 2 samples
    plain = branch_ratio(chain([0.5, 2.0, 0.1], False), x)
    assert res.ratio == pytest.approx([0.5, 2.0, 0.1]) and res.shortcut_ratio == pytest.approx([0.5, 2.0, 0.1])
    assert plain.ratio == pytest.approx([0.5, 2.0, 0.1]) and plain.shortcut_ratio == [None, None, None]
    assert res.samples == 6
    assert res.input_norm[1] == pytest.approx(1.5 * res.input_norm[0])  # residual: x_1 = 1.5 x_0
    assert plain.input_norm[1] == pytest.approx(0.5 * plain.input_norm[0])


# --------------------------------------------------------------------------- lesions


def _sum(out: Tensor, targets: object) -> float:
    return float(out.sum())


def test_lesion_of_a_scalar_chain() -> None:
    # Output = prod of the slopes times sum(x) = 3; removing block k divides by its slope.
    x = torch.ones(1, 3, dtype=torch.float64)
    res = lesion_study(chain([0.5, 1.0, 2.0], True), x, None, metric=_sum, ks=(1, 2, 3), trials=4)
    assert res.baseline == pytest.approx(3 * 1.5 * 2 * 3)
    assert res.removal == ["shortcut"] * 3
    assert res.single == pytest.approx([3 * 2 * 3, 3 * 1.5 * 3, 3 * 1.5 * 2])
    assert [p["k"] for p in res.random] == [1, 2, 3]
    assert res.random[2]["values"] == pytest.approx([3.0])  # all removed: the identity, drawn once
    pairs = {3 * 3.0, 3 * 2.0, 3 * 1.5}  # two removed: the one left's slope
    assert len(res.random[1]["values"]) == 4 and set(res.random[1]["values"]) <= pairs
    again = lesion_study(chain([0.5, 1.0, 2.0], True), x, None, metric=_sum, ks=(1, 2, 3), trials=4)
    assert again.random == res.random  # seeded draws

    plain = lesion_study(chain([0.5, 1.0, 2.0], False), x, None, metric=_sum, ks=(1,), trials=2)
    assert plain.removal == ["identity"] * 3
    assert plain.single == pytest.approx([3 * 2.0, 3 * 1.0, 3 * 0.5])


def test_a_plain_block_that_changes_shape_is_not_removable_and_a_projection_shortcut_is_kept() -> None:
    w, p = torch.ones(2, 3, dtype=torch.float64), 2 * torch.ones(2, 3, dtype=torch.float64)
    x = torch.ones(1, 3, dtype=torch.float64)
    res = nn.Sequential(LinearBlock(w, True, proj=p), LinearBlock(torch.eye(2, dtype=torch.float64))).double()
    plain = nn.Sequential(LinearBlock(w, False, proj=p), LinearBlock(torch.eye(2, dtype=torch.float64), False)).double()
    infos = block_infos(res, x)
    assert [(i.removal, i.in_shape, i.out_shape) for i in infos] == [("shortcut", [1, 3], [1, 2]), ("shortcut", [1, 2], [1, 2])]
    study = lesion_study(res, x, None, metric=_sum, ks=())
    assert study.baseline == pytest.approx(2 * (3 + 6) * 2)  # block 0: (3 + 6) per unit; block 1 doubles
    assert study.single[0] == pytest.approx(2 * 6 * 2)  # the branch dropped, the projection P x kept
    plain_infos = block_infos(plain, x)
    assert [i.removal for i in plain_infos] == ["not removable", "identity"]
    assert lesion_study(plain, x, None, metric=_sum, ks=(1, 2)).single == [None, pytest.approx(3 * 2)]
    with pytest.raises(AnalysisError, match=r"'0' cannot be removed.*\[1, 3\] -> \[1, 2\]"):
        with lesioned(plain, ["0"], plain_infos):
            pass


class InplaceBlock(ResidualBlock):
    def __init__(self) -> None:
        super().__init__(True)
        self.lin = nn.Linear(3, 3)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu_(self.join(self.lin(x), x))  # in place after the join, as BasicBlock's ReLU


class UsesInputTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = InplaceBlock()

    def forward(self, x: Tensor) -> Tensor:
        h = x - 1  # negative entries, which an in-place ReLU on the shortcut would clobber
        return torch.cat([self.block(h), h], dim=1)


def test_lesion_does_not_write_into_the_shortcut_and_cleans_up() -> None:
    torch.manual_seed(0)
    model, x = UsesInputTwice(), torch.zeros(2, 3)
    infos = block_infos(model, x)
    intact = model(x)
    with lesioned(model, ["block"], infos):
        out = model(x)
    assert torch.equal(out, torch.cat([torch.zeros(2, 3), -torch.ones(2, 3)], dim=1))
    with pytest.raises(ValueError), lesioned(model, ["block"], infos):
        raise ValueError("interrupted")
    assert torch.equal(model(x), intact)
    assert not model.block._forward_hooks and "_join_hooks" not in model.block.__dict__
    with pytest.raises(AnalysisError, match="no residual block named 'nope'"):
        with lesioned(model, ["nope"], infos):
            pass


def test_models_without_blocks_are_refused() -> None:
    with pytest.raises(AnalysisError, match="has no reszoo.nn.ResidualBlock"):
        branch_ratio(nn.Linear(2, 2), torch.ones(1, 2))


# --------------------------------------------------------------------------- gradient correlation


def test_gradient_correlation_of_a_linear_model_is_one() -> None:
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model = nn.Sequential(chain([0.5, -0.3], True), nn.Linear(3, 4).double())
    r = gradient_correlation(model, x, points=16, lags=(1, 4, 15, 99))
    assert r.lags == [1, 4, 15] and r.correlation == pytest.approx([1.0, 1.0, 1.0], abs=1e-9)
    assert r.base_inputs == 2 and r.step == pytest.approx(2 * 0.25 / 15)
    with pytest.raises(AnalysisError, match="float input"):
        gradient_correlation(model, torch.ones(2, 3, dtype=torch.long))


class MLPBlock(ResidualBlock):
    def __init__(self, width: int, residual: bool) -> None:
        super().__init__(residual)
        self.fc = nn.Linear(width, width)
        nn.init.kaiming_normal_(self.fc.weight, nonlinearity="relu")
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        branch = torch.relu(self.fc(x))
        return self.join(branch / math.sqrt(2) if self.residual else branch, x)


def test_gradient_correlation_of_token_inputs_runs_through_the_embedding() -> None:
    class Bag(nn.Module):  # linear in its word embeddings: every gradient along a segment is the same
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.out = nn.Linear(4, 3)

        def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
            return self.out((self.emb(input_ids) * attention_mask[..., None]).sum(1))

    model = Bag()
    ids = {"input_ids": torch.tensor([[1, 2, 3], [4, 5, 0]]), "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]])}
    corr = gradient_correlation(model, ids, embedding=model.emb, points=8, lags=(1, 4))
    assert corr.lags == [1, 4] and corr.correlation == pytest.approx([1.0, 1.0])
    assert all(p.grad is None for p in model.parameters()) and model.emb(torch.tensor([1])).shape == (1, 4)  # hook gone
    with pytest.raises(AnalysisError, match="or the model's embedding module for token inputs"):
        gradient_correlation(model, ids)
    with pytest.raises(AnalysisError, match="never ran"):
        gradient_correlation(model, ids, embedding=nn.Embedding(10, 4))


def test_deep_plain_relu_nets_shatter_gradients_and_residual_ones_do_not() -> None:
    # Balduzzi et al. 2017: at initialisation the input gradients of a deep plain ReLU net
    # decorrelate within a tiny distance, those of its residual twin stay correlated.
    def net(residual: bool) -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(2, 64), *(MLPBlock(64, residual) for _ in range(24)), nn.Linear(64, 1))

    x = torch.randn(2, 2, generator=torch.Generator().manual_seed(1))
    res = gradient_correlation(net(True), x, points=64, radius=1.0, lags=(1, 4))
    plain = gradient_correlation(net(False), x, points=64, radius=1.0, lags=(1, 4))
    assert res.correlation[0] > 0.99 and res.correlation[1] > 0.95  # measured 0.999 and 0.992
    assert plain.correlation[0] < 0.85 and plain.correlation[1] < 0.6  # measured 0.74 and 0.44


# --------------------------------------------------------------------------- plots


def test_plots_are_pngs_with_several_models(tmp_path: Path) -> None:
    x, c = torch.ones(2, 3, dtype=torch.float64), torch.ones(2, 3, dtype=torch.float64)
    models = {"residual": chain([0.5] * 3, True), "plain": chain([0.5] * 3, False)}
    paths = [
        plot_gradient_flow({k: gradient_flow(m, x, c, loss_fn=dot_loss) for k, m in models.items()}, tmp_path / "g.png"),
        plot_branch_ratio({k: branch_ratio(m, x) for k, m in models.items()}, tmp_path / "b.png"),
        plot_lesion({k: lesion_study(m, x, None, metric=_sum, ks=(1, 2)) for k, m in models.items()}, tmp_path / "l.png"),
        plot_gradient_correlation(gradient_correlation(models["plain"], x, points=8, lags=(1, 2)), tmp_path / "sub" / "c.png"),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


# --------------------------------------------------------------------------- bundled models


def test_bundled_mnist_models_on_mnist_test_digits() -> None:
    npz = need_data("mnist/mnist.npz")
    res, plain = reszoo.load("resnet-mnist"), reszoo.load("resnet-mnist-plain")
    data = image_data(res, npz, limit=32)
    assert data.labelled and data.inputs.shape == (32, 1, 28, 28)
    r = lesion_study(res, data.inputs, data.targets, ks=(3,))
    p = lesion_study(plain, data.inputs, data.targets, ks=(3,))
    assert r.baseline >= 95 and p.baseline >= 95
    # Every resnet-mnist block downsamples: the residual ones fall back on their projection
    # shortcut, the plain ones change the shape and cannot be removed at all.
    assert r.removal == ["shortcut"] * 3 and p.removal == ["not removable"] * 3
    assert p.single == [None] * 3 and p.random == []
    assert r.random[-1]["k"] == 3 and r.random[-1]["mean"] < 50  # all branches gone: a projection-only net
    for model in (res, plain):
        flow = gradient_flow(model, data.inputs[:8], data.targets[:8])
        ratio = branch_ratio(model, data.inputs[:8])
        assert all(v > 0 and math.isfinite(v) for v in flow.input_grad_norm + flow.param_grad_norm + ratio.ratio)
        assert not model.training


def test_an_rl_policy_is_analysed_through_the_same_blocks() -> None:
    model = reszoo.load("ppo-cartpole-resmlp")  # returns (logits, value): the first tensor is scored
    obs = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    actions = model(obs)[0].argmax(-1)
    study = lesion_study(model, obs, actions, ks=(1, 4), trials=2)
    assert study.baseline == 100.0 and study.removal == ["shortcut"] * len(list(residual_blocks(model)))
    flow = gradient_flow(model, obs, actions)
    # The policy's loss reaches the actor's blocks only; the critic's get exactly no gradient.
    assert flow.blocks == ["actor.blocks.0", "actor.blocks.1", "critic.blocks.0", "critic.blocks.1"]
    assert all(v > 0 for v in flow.input_grad_norm[:2] + flow.param_grad_norm[:2])
    assert flow.input_grad_norm[2:] == [0.0, 0.0] and flow.param_grad_norm[2:] == [0.0, 0.0]


# --------------------------------------------------------------------------- command line


def test_cli_analyze_writes_json_and_plots_for_a_model_and_its_twin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "resnet-mnist", "resnet-mnist-plain", "--data", str(DIGITS), "--out", str(tmp_path), "--trials", "2"]) == 0
    report = json.loads((tmp_path / "analysis.json").read_text())
    res, plain = report["models"]["resnet-mnist"], report["models"]["resnet-mnist-plain"]
    assert res["residual"] is True and plain["residual"] is False
    assert res["data"] == {"source": f"{DIGITS} (labelled file names, 10 of 10 images)", "samples": 10, "labelled": True}
    assert res["lesion"]["baseline"] == 100.0 and res["lesion"]["metric"] == "accuracy (%)"
    assert [b["removal"] for b in plain["blocks"]] == ["not removable"] * 3
    assert len(res["gradient_flow"]["input_grad_norm"]) == 3 and len(res["gradient_correlation"]["correlation"]) == 5
    assert {p.name for p in tmp_path.glob("*.png")} == {"gradient_flow.png", "branch_ratio.png", "lesion.png", "gradient_correlation.png"}
    assert "resnet-mnist: accuracy (%) 100.00 on 10 samples; 3/3 blocks removable" in capsys.readouterr().out


def test_cli_analyze_without_data_scores_noise_against_the_intact_model(tmp_path: Path) -> None:
    assert main(["analyze", "resnet-mnist", "--out", str(tmp_path), "--limit", "16", "--trials", "1"]) == 0
    model = json.loads((tmp_path / "analysis.json").read_text())["models"]["resnet-mnist"]
    assert model["data"]["labelled"] is False and model["data"]["samples"] == 16
    assert model["lesion"]["metric"] == "agreement with the intact model (%)" and model["lesion"]["baseline"] == 100.0


def test_cli_analyze_reads_class_folders_and_mnist_style_npz(tmp_path: Path) -> None:
    from PIL import Image

    for label in ("3", "7"):
        (tmp_path / "folder" / label).mkdir(parents=True)
        Image.open(DIGITS / f"digit_{label}.png").save(tmp_path / "folder" / label / "a.png")
    model = reszoo.load("resnet-mnist")
    data = image_data(model, tmp_path / "folder")
    assert data.targets.tolist() == [3, 7] and data.inputs.shape == (2, 1, 28, 28)
    images = np.stack([np.asarray(Image.open(DIGITS / f"digit_{d}.png")) for d in range(10)])
    np.savez(tmp_path / "d.npz", x=images, y=np.arange(10))
    npz = image_data(model, tmp_path / "d.npz", limit=4)
    assert npz.inputs.shape == (4, 1, 28, 28) and npz.source.endswith("(x/y, 4 of 10)")
    assert torch.allclose(npz.inputs, model.preprocess([str(DIGITS / f"digit_{d}.png") for d in npz.targets.tolist()]))


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: np.savez(d / "bad.npz", pixels=np.zeros((2, 28, 28), np.uint8)), r"holds \['pixels'\]; expected images and labels as one of x_test/y_test"),
    (lambda d: np.savez(d / "bad.npz", x=np.zeros((2, 28, 28), np.uint8), y=np.array([0, 12])), "labels span 0..12, but the model has 10 classes"),
    (lambda d: np.savez(d / "bad.npz", x=np.zeros((2, 28, 28), np.float32), y=np.array([0, 1])), "x must be uint8 images"),
    (lambda d: (d / "bad" / "cat").mkdir(parents=True), r"class folder: 'cat' is not a class of this model \(its classes: 0, 1, 2"),
    (lambda d: (d / "bad").mkdir(), "no images"),
])
def test_cli_analyze_bad_data_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, message: str) -> None:
    make(tmp_path)  # type: ignore[operator]
    bad = next(tmp_path.glob("bad*"))
    assert main(["analyze", "resnet-mnist", "--data", str(bad), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("reszoo: error: --data ") and err.count("\n") == 1
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "out").exists()


def test_cli_analyze_says_what_a_speech_classifier_needs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["analyze", "tdnn-fsdd-digits", "--out", str(tmp_path)]) == 1  # no noise fallback outside images
    err = capsys.readouterr().err
    assert err.startswith("reszoo: error: tdnn-fsdd-digits (speech domain): this model needs --data: a folder of audio files") and err.count("\n") == 1


# --------------------------------------------------------------------------- agents and generators (their domains' analysis.py)


def test_projection_loss_of_the_identity_is_the_direction() -> None:
    from reszoo.analysis import projection_loss

    loss = projection_loss(3)
    x = torch.randn(4, 2, 3, requires_grad=True)
    (grad,) = torch.autograd.grad(loss(x), x)
    u = grad[0] * 4  # d/dx of mean_i <x_i, u> is u / N for every sample
    assert torch.allclose(grad, u.expand_as(grad) / 4) and u.norm().item() == pytest.approx(1.0)
    assert torch.equal(projection_loss(3)(x.detach()), loss(x.detach()))  # seeded: the same direction


def test_cli_analyze_scores_an_agents_policy_on_its_own_episodes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("gymnasium")
    assert main(["analyze", "ppo-cartpole-resmlp", "ppo-cartpole-resmlp-plain", "--out", str(tmp_path), "--limit", "64",
                 "--trials", "1"]) == 0
    report = json.loads((tmp_path / "analysis.json").read_text())["models"]
    for name, residual in (("ppo-cartpole-resmlp", True), ("ppo-cartpole-resmlp-plain", False)):
        r = report[name]
        assert r["residual"] is residual and r["data"]["samples"] == 64 and r["data"]["source"].startswith("CartPole-v1: 64 steps")
        # the policy only: the critic's blocks are not the action's, so they are not analysed
        assert [b["name"] for b in r["blocks"]] == ["actor.blocks.0", "actor.blocks.1"]
        assert r["lesion"]["metric"] == "agreement with the intact agent's greedy actions (%)" and r["lesion"]["baseline"] == 100.0
        assert all(g > 0 for g in r["gradient_flow"]["input_grad_norm"]) and r["gradient_correlation"] is not None
    assert "ppo-cartpole-resmlp: agreement with the intact agent's greedy actions (%) 100.00 on 64 samples" in capsys.readouterr().out


def test_an_agents_observations_come_from_an_npz_or_its_episodes(tmp_path: Path) -> None:
    pytest.importorskip("gymnasium")
    from reszoo.rl.analysis import analysis_data

    agent = reszoo.load("sac-pendulum-resmlp")
    first, again = (analysis_data(agent, None, limit=40, seed=5) for _ in range(2))
    assert torch.equal(first.inputs, again.inputs) and first.inputs.shape == (40, 3)  # seeded episodes
    assert torch.allclose(first.targets, agent(first.inputs)) and first.metric(first.targets, first.targets) == 100.0
    np.savez(tmp_path / "obs.npz", observations=first.inputs.numpy())
    read = analysis_data(agent, tmp_path / "obs.npz", limit=10, seed=0)
    assert read.inputs.shape == (10, 3) and read.source.endswith("(10 of 40 observations)")
    # continuous: the same action means every dimension within 5 % of its range (Pendulum: 4 * 0.05 = 0.2)
    ref = torch.zeros(2, 1)
    assert read.metric(torch.tensor([[0.19], [0.21]]), ref) == 50.0
    flow = gradient_flow(read.module, read.inputs, read.targets, loss_fn=read.loss_fn)
    assert flow.blocks == ["actor.blocks.0"] and flow.input_grad_norm[0] > 0  # the projection loss reaches the actor
    for bad, message in ((tmp_path / "x.npz", "holds \\['x'\\]; expected an 'observations' or 'obs' array"),
                         (tmp_path / "wrong.npz", "observations of shape \\(3, 2\\); this agent reads \\(N, 3\\)")):
        np.savez(bad, **({"x": np.zeros(3)} if bad.name == "x.npz" else {"obs": np.zeros((3, 2))}))
        with pytest.raises(AnalysisError, match=message):
            analysis_data(agent, bad)


def test_cli_analyze_scores_a_generator_against_its_intact_samples(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from reszoo.gan.analysis import analysis_data, r2_percent

    ref = torch.randn(6, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    assert r2_percent(ref, ref) == 100.0 and r2_percent(ref.mean(0, keepdim=True).expand_as(ref), ref) == pytest.approx(0.0)
    assert main(["analyze", "sngan-mnist", "sngan-mnist-plain", "--out", str(tmp_path), "--limit", "20", "--trials", "1"]) == 0
    report = json.loads((tmp_path / "analysis.json").read_text())["models"]
    res, plain = report["sngan-mnist"], report["sngan-mnist-plain"]
    assert res["lesion"]["metric"] == "variance of the intact samples kept (R², %)" and res["lesion"]["baseline"] == 100.0
    assert [b["removal"] for b in res["blocks"]] == ["shortcut", "shortcut"]  # the up-blocks keep their 1x1 projections
    assert [b["removal"] for b in plain["blocks"]] == ["not removable"] * 2  # ... which the plain twin does not have
    assert res["data"]["source"] == "20 noise vectors (seed 0, classes 0..9 in turn)" and res["gradient_correlation"] is None
    assert all(g > 0 for g in res["gradient_flow"]["input_grad_norm"])
    data = analysis_data(reszoo.load("sngan-mnist"), None, limit=10, seed=1)
    assert torch.allclose(data.targets, reszoo.load("sngan-mnist").generate(data.inputs["z"], data.inputs["y"], None))
    with pytest.raises(AnalysisError, match="a generator draws its own noise"):
        analysis_data(reszoo.load("sngan-mnist"), tmp_path, limit=10)
    capsys.readouterr()


SPEECH_EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "speech"


def test_cli_analyze_reads_audio_class_folders_through_the_speech_domain(tmp_path: Path) -> None:
    import shutil

    for wav in sorted(SPEECH_EXAMPLES.glob("*.wav")):  # <digit>_<speaker>_<take>.wav -> <digit>/
        (tmp_path / "data" / wav.name[0]).mkdir(parents=True, exist_ok=True)
        shutil.copy(wav, tmp_path / "data" / wav.name[0])
    model = reszoo.load("tdnn-fsdd-digits")
    data = labelled_data(model, "speech", tmp_path / "data")
    assert data.targets.tolist() == [0, 3, 7, 7, 9] and set(data.inputs) == {"feats", "lengths"}
    assert data.inputs["feats"].shape[0] == 5 and data.inputs["feats"].shape[2] == 80
    assert float(data.inputs["lengths"].max()) == 1.0 and data.source.endswith("(class folders, 5 of 5)")
    # the longest recording is unpadded: its batched logits are the one-recording ones
    longest = int(data.inputs["lengths"].argmax())
    with torch.no_grad():
        batched = model.eval()(**data.inputs)[longest]
        alone = model(model.preprocess(str(sorted(SPEECH_EXAMPLES.glob("*.wav"))[longest]))[None])[0]
    assert torch.allclose(batched, alone, atol=1e-4)
    out = tmp_path / "out"
    assert main(["analyze", "tdnn-fsdd-digits", "tdnn-fsdd-digits-plain", "--data", str(tmp_path / "data"), "--out", str(out),
                 "--trials", "1"]) == 0
    report = json.loads((out / "analysis.json").read_text())["models"]
    assert report["tdnn-fsdd-digits"]["residual"] is True and report["tdnn-fsdd-digits-plain"]["residual"] is False
    for r in report.values():
        assert r["data"]["samples"] == 5 and len(r["gradient_flow"]["input_grad_norm"]) == 3
        assert r["gradient_correlation"] is None and len(r["lesion"]["single"]) == 3


def test_cli_analyze_reads_text_tables_through_the_text_domain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"query": "I still have not received my new card", "intent": "card_arrival"},
            {"query": "how do I change my PIN", "intent": "change_pin"},
            {"query": "my card payment was declined", "intent": "declined_card_payment"}]
    table = tmp_path / "q.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["analyze", "minilm-l6-banking77", "--data", str(table), "--column", "query", "--label-column", "intent",
                 "--out", str(tmp_path / "out"), "--trials", "1"]) == 0
    r = json.loads((tmp_path / "out" / "analysis.json").read_text())["models"]["minilm-l6-banking77"]
    assert r["data"] == {"source": f"{table} ('query'/'intent' columns, 3 of 3)", "samples": 3, "labelled": True}
    assert len(r["gradient_flow"]["input_grad_norm"]) == 12  # 6 layers x 2 sublayers
    assert len(r["gradient_correlation"]["correlation"]) == 5  # token ids: through the word embeddings
    assert r["lesion"]["baseline"] == 100.0  # the intents are this model's
    capsys.readouterr()
    assert main(["analyze", "minilm-l6-banking77", "--data", str(table), "--out", str(tmp_path / "out2")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("reszoo: error: --data ") and "'text'" in err and err.count("\n") == 1
    assert not (tmp_path / "out2").exists()
