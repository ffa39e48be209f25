"""``docs/residual-study.md`` from the residual study's JSON results (``scripts/residual_study.py report``).

Everything in the report is computed here from ``<results>/<domain>/runs/*.json``: the figures, the
table, and a verdict per claim from explicit rules that the report states. Nothing is typed by hand,
so rerunning the sweep and this command is the only way to change the numbers.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DOMAINS = ("image", "text", "speech", "rl", "gan")
# The grid each sweep is meant to cover (the runners' defaults): points without a run are listed as not run.
# Three seeds where a run takes minutes on one core (text, RL), two where it takes ten or more.
PLANNED: dict[str, tuple[list[int], list[int]]] = {"text": ([2, 6, 12], [0, 1, 2]), "speech": ([3, 6, 12], [0, 1]),
                                                   "rl": ([1, 2, 4, 8], [0, 1, 2]), "gan": ([1, 2, 4], [0, 1])}
# A difference counts only if it exceeds the spread over seeds of either twin, and at least this.
FLOORS = {"acc": 0.2, "loss": 0.01, "lesion": 2.0}
GRAD_DECADE = 1.0  # |log10(gradient at the first block / at the last)| >= 1: a 10x change across the net
COMPARABLE_FIT = 1.0  # train accuracies within 1 point: the twins fit the data alike


# --------------------------------------------------------------------------- data


def load_runs(results: Path, domain: str = "image") -> list[dict[str, Any]]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted((results / domain / "runs").glob("*.json"))]


@dataclass
class Stat:
    values: list[float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else float("nan")

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    @property
    def spread(self) -> float:
        return max(self.values) - min(self.values) if self.values else 0.0

    def fmt(self, digits: int = 2) -> str:
        if not self.values or not math.isfinite(self.mean):
            return "–"
        return f"{self.mean:.{digits}f}" + (f" ± {self.std:.{digits}f}" if len(self.values) > 1 else "")


def _num(value: Any, missing: float = float("nan")) -> float:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else missing


def attenuation(flow: dict[str, Any]) -> float:
    """log10(‖∂L/∂x‖ at the first block / at the last): < 0 vanishing, > 0 exploding toward the input."""
    g = flow["input_grad_norm"]
    first, last = _num(g[0]), _num(g[-1])
    return math.log10(first / last) if first > 0 and last > 0 else float("nan")


MIN_ABOVE_CHANCE = 10.0  # a twin this close to chance has learnt nothing that a lesion could remove


def single_drop(lesion: dict[str, Any], chance: float) -> float:
    """Mean share (%) of the above-chance test accuracy lost when one block is removed, over the blocks
    both twins can remove (``candidates``: those that keep their input's shape). Relative, so that
    twins with different intact accuracies compare; NaN for a model within 10 points of chance."""
    above = lesion["baseline"] - chance
    if above < MIN_ABOVE_CHANCE:
        return float("nan")
    candidates = set(lesion.get("candidates") or lesion["blocks"])
    drops = [100 * (lesion["baseline"] - v) / above for b, v in zip(lesion["blocks"], lesion["single"])
             if b in candidates and v is not None]
    return statistics.fmean(drops) if drops else float("nan")


def _corr(result: dict[str, Any] | None) -> float:
    """Gradient correlation at the smallest lag; NaN where it was not measured (token-id inputs)."""
    return _num(result["correlation"][0]) if result else float("nan")


def aggregate(runs: Sequence[dict[str, Any]]) -> dict[tuple[int, bool], dict[str, Stat]]:
    """Per (depth, residual): each measure over the seeds."""
    groups: dict[tuple[int, bool], dict[str, Stat]] = defaultdict(lambda: defaultdict(lambda: Stat([])))
    for r in runs:
        g = groups[(r["depth"], r["residual"])]
        f = r["final"]
        values = {
            "test_acc": _num(f["test_acc"]), "train_acc": _num(f["train_acc"]),
            "train_loss": _num(f["train_loss"], math.inf), "gap": _num(f["train_acc"]) - _num(f["test_acc"]),
            "attenuation_init": attenuation(r["gradient_flow"]["init"]),
            "attenuation_end": attenuation(r["gradient_flow"]["end"]),
            "lesion_drop": single_drop(r["lesion"], 100 / r.get("classes", 10)), "lesion_baseline": _num(r["lesion"]["baseline"]),
            "grad_corr_init": _corr(r["gradient_correlation"]["init"]),
            "grad_corr_end": _corr(r["gradient_correlation"]["end"]),
            "params": float(r["params"]), "seconds": _num(r["wall_seconds"]["total"]),
        }
        for key, value in values.items():
            g[key].values.append(value)
    return {k: dict(v) for k, v in groups.items()}


# --------------------------------------------------------------------------- verdicts


@dataclass
class Verdict:
    claim: str
    verdict: str  # "supported" | "not supported" | "mixed"
    rule: str
    evidence: str
    anchor: str


def _noise(agg: dict[tuple[int, bool], dict[str, Stat]], depth: int, key: str, floor: float) -> float:
    return max(agg[(depth, True)][key].spread, agg[(depth, False)][key].spread, floor)


def _tally(agg: dict[tuple[int, bool], dict[str, Stat]], depths: Sequence[int], key: str, floor: float,
           better: Callable[[float, float], float]) -> tuple[list[int], list[int], list[str]]:
    """Depths where the residual twin is clearly better / clearly worse (``better(res, plain) > noise``)."""
    wins, losses, notes = [], [], []
    for d in depths:
        diff = better(agg[(d, True)][key].mean, agg[(d, False)][key].mean)
        noise = _noise(agg, d, key, floor)
        if diff > noise:
            wins.append(d)
        elif diff < -noise:
            losses.append(d)
        notes.append(f"{d}: {diff:+.2f} (noise {noise:.2f})")
    return wins, losses, notes


def _count_verdict(wins: Sequence[int], losses: Sequence[int], n: int) -> str:
    if wins and len(wins) >= math.ceil(n / 2) and not losses:
        return "supported"
    return "not supported" if not wins else "mixed"


IMAGE_ANCHORS = {
    "1": "He et al. 2016 (§4.1, Figs. 4 and 6): deeper plain nets have higher *training* error, ResNets do not; they argue "
         "this is not caused by vanishing gradients, since with BatchNorm the plain nets' backward signals have healthy norms.",
    "2": "He et al. 2016, Table 6 (CIFAR-10 test error): ResNet-20 8.75 %, -32 7.51 %, -44 7.17 %, -56 6.97 %, -110 6.43 % "
         "(6.61 ± 0.16 over 5 runs); ImageNet (Table 2, top-1 error): plain-34 28.54 % vs ResNet-34 25.03 %.",
    "3": "He et al. 2016, Fig. 6 (CIFAR-10): training error rises from plain-20 to plain-56 (and plain-110 stays above "
         "60 %), while ResNet-20 → 110 keeps falling.",
    "4": "Veit et al. 2016 (arXiv:1605.06431): removing a single block of a CIFAR-10 ResNet-110 barely changes its error "
         "(except some downsampling blocks), removing any layer of a plain VGG drops it to chance; the error of a ResNet "
         "grows smoothly with the number of blocks removed.",
    "5": "He et al. 2016 do not claim it: their 1202-layer ResNet reaches a training error like the 110-layer one's but a "
         "higher test error (7.93 % vs 6.43 %), which they attribute to overfitting.",
}


def verdicts(agg: dict[tuple[int, bool], dict[str, Stat]], anchors: dict[str, str] | None = None) -> list[Verdict]:
    """The five claims' verdicts from the aggregated runs; ``anchors``: the published result each is set
    beside, by claim number (default: the image anchors, He et al. 2016 and Veit et al. 2016)."""
    anchors = anchors or IMAGE_ANCHORS
    depths = sorted({d for d, _ in agg if (d, True) in agg and (d, False) in agg})
    if not depths:
        return []
    deep, out = depths[-1], []

    # (1) eases training / vanishing gradients
    loss_wins, loss_losses, loss_notes = _tally(agg, depths, "train_loss", FLOORS["loss"], lambda r, p: p - r)
    optimisation = deep in loss_wins and not loss_losses
    a_res, a_plain = agg[(deep, True)]["attenuation_init"].mean, agg[(deep, False)]["attenuation_init"].mean
    gradients = abs(a_plain) >= GRAD_DECADE and abs(a_res) < GRAD_DECADE
    parts = int(optimisation) + int(gradients)
    direction = "vanishing" if a_plain < 0 else "growing toward the input (exploding)"
    out.append(Verdict(
        "1. Eases training / fixes vanishing gradients",
        ["not supported", "mixed", "supported"][parts],
        f"(a) optimisation: the residual twin's final training loss is lower by more than the noise at the deepest depth "
        f"and higher by more than the noise at none; (b) gradients: at initialisation, at the deepest depth, the plain "
        f"twin's input-gradient norm changes ≥ 10x between its last and first block (|log10 ratio| ≥ {GRAD_DECADE:g}) and "
        f"the residual twin's does not. Both: supported; one: mixed; neither: not supported.",
        f"(a) {'yes' if optimisation else 'no'}: plain − residual training loss by depth {'; '.join(loss_notes)}. "
        f"(b) {'yes' if gradients else 'no'}: log10(first/last block gradient) at depth {deep}: residual {a_res:+.2f}, "
        f"plain {a_plain:+.2f} (plain: {direction}).",
        anchors["1"],
    ))

    # (2) raises accuracy
    wins, losses, notes = _tally(agg, depths, "test_acc", FLOORS["acc"], lambda r, p: r - p)
    out.append(Verdict(
        "2. Raises accuracy",
        _count_verdict(wins, losses, len(depths)),
        "Per depth, residual − plain test accuracy counts if it exceeds the noise. Supported: better at ≥ half of the "
        "depths and worse at none; not supported: better at none; otherwise mixed.",
        f"residual − plain test accuracy (points) by depth: {'; '.join(notes)}.",
        anchors["2"],
    ))

    # (3) makes much deeper networks trainable
    best = {res: max(agg[(d, res)]["train_acc"].mean for d in depths) for res in (True, False)}
    noise = _noise(agg, deep, "train_acc", FLOORS["acc"])
    plain_drop = best[False] - agg[(deep, False)]["train_acc"].mean
    res_drop = best[True] - agg[(deep, True)]["train_acc"].mean
    plain_degrades, res_holds = plain_drop > noise, res_drop <= noise
    verdict3 = "supported" if plain_degrades and res_holds else "mixed" if plain_degrades else "not supported"
    out.append(Verdict(
        "3. Makes much deeper networks trainable",
        verdict3,
        "Degradation = the deepest net's final training accuracy below the twin's best over the depths by more than the "
        "noise. Supported: the plain twin degrades and the residual one does not; mixed: both degrade; not supported: "
        "the plain twin does not degrade (nothing for the skips to fix at these depths).",
        f"best − deepest ({deep}) training accuracy: plain {plain_drop:.2f}, residual {res_drop:.2f} points (noise {noise:.2f}); "
        "training accuracy by depth: " + "; ".join(
            f"{d}: res {agg[(d, True)]['train_acc'].mean:.2f} / plain {agg[(d, False)]['train_acc'].mean:.2f}" for d in depths) + ".",
        anchors["3"],
    ))

    # (4) improves information flow (lesion)
    lesion_depths = [d for d in depths if all(math.isfinite(agg[(d, r)]["lesion_drop"].mean) for r in (True, False))]
    if lesion_depths:
        wins, losses, notes = _tally(agg, lesion_depths, "lesion_drop", FLOORS["lesion"], lambda r, p: p - r)
        deep_l = lesion_depths[-1]
        if len(wins) == len(lesion_depths):
            verdict4 = "supported"
        elif deep_l not in wins:
            verdict4 = "not supported"
        else:
            verdict4 = "mixed"
        evidence = ("plain − residual mean share of the above-chance accuracy lost when one block is removed (%), by depth: "
                    + "; ".join(notes) + ".")
    else:
        verdict4 = "not supported"
        evidence = ("no depth where both twins are at least 10 points above chance and have blocks that can be removed: "
                    "nothing to compare.")
    out.append(Verdict(
        "4. Improves information flow (lesion)",
        verdict4,
        "Lesion drop = the share of the above-chance test accuracy lost when one block is removed at test time, mean over "
        "the blocks both twins can remove (same input and output shape); only at depths where both twins are ≥ 10 points "
        "above chance. Supported: the residual twin's drop is smaller by more than the noise at every such depth; not "
        "supported: not smaller at the deepest one; otherwise mixed.",
        evidence,
        anchors["4"],
    ))

    # (5) reduces overfitting
    comparable = [d for d in depths if abs(agg[(d, True)]["train_acc"].mean - agg[(d, False)]["train_acc"].mean) <= COMPARABLE_FIT]
    if comparable:
        wins, losses, notes = _tally(agg, comparable, "gap", FLOORS["acc"], lambda r, p: p - r)
        verdict5 = _count_verdict(wins, losses, len(comparable))
        evidence = (f"plain − residual train−test gap (points) at the depths where both fit the training data alike: "
                    f"{'; '.join(notes)}.")
    else:
        verdict5 = "not supported"
        evidence = ("no depth where both twins reach the same training accuracy (within "
                    f"{COMPARABLE_FIT:g} point), so a gap difference would measure underfitting, not the skips. Gaps: "
                    + "; ".join(f"{d}: res {agg[(d, True)]['gap'].mean:.2f} / plain {agg[(d, False)]['gap'].mean:.2f}" for d in depths) + ".")
    out.append(Verdict(
        "5. Reduces overfitting (train − test gap)",
        verdict5,
        f"Compared only at depths where the twins' training accuracies are within {COMPARABLE_FIT:g} point (else a smaller "
        "gap may just be underfitting). Supported: the residual gap is smaller by more than the noise at ≥ half of those "
        "depths and larger at none; not supported: smaller at none (or no comparable depth); otherwise mixed.",
        evidence,
        anchors["5"],
    ))
    return out


# --------------------------------------------------------------------------- figures


def _figure(ncols: int, width: float = 5.0) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, 3.8), layout="constrained")
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


STYLE = {True: dict(color="C0", label="residual"), False: dict(color="C3", label="plain")}


def figures(runs: Sequence[dict[str, Any]], agg: dict[tuple[int, bool], dict[str, Stat]], folder: Path,
            prefix: str = "image", depth_label: str = "depth (layers)", unit: str | None = None) -> dict[str, Path]:
    """The domain's PNGs in ``folder`` (named ``<prefix>-*.png``), by kind; panel titles say ``<d> <unit>``
    (``depth <d>`` without a unit)."""
    name = (lambda d: f"{d} {unit}") if unit else (lambda d: f"depth {d}")  # noqa: E731
    folder.mkdir(parents=True, exist_ok=True)
    depths = sorted({d for d, _ in agg})
    paths: dict[str, Path] = {}

    fig, (ax, ax2) = _figure(2)
    for res in (True, False):
        ds = [d for d in depths if (d, res) in agg]
        ax.errorbar(ds, [agg[(d, res)]["test_acc"].mean for d in ds], yerr=[agg[(d, res)]["test_acc"].std for d in ds],
                    marker="o", capsize=3, **STYLE[res])
        ax2.errorbar(ds, [agg[(d, res)]["train_acc"].mean for d in ds], yerr=[agg[(d, res)]["train_acc"].std for d in ds],
                     marker="o", capsize=3, ls="--", **STYLE[res])
    ax.set(xscale="log", xlabel=depth_label, ylabel="test accuracy (%)", title="Test accuracy (mean ± std over seeds)")
    ax2.set(xscale="log", xlabel=depth_label, ylabel="training accuracy (%)", title="Training accuracy (no augmentation)")
    for a in (ax, ax2):
        a.set_xticks(depths, [str(d) for d in depths])
        a.minorticks_off()
    paths["accuracy"] = _save(fig, [ax, ax2], folder / f"{prefix}-accuracy-vs-depth.png")

    fig, axes = _figure(len(depths), 3.6)
    ordered = sorted(runs, key=lambda r: (not r["residual"], r["seed"]))  # residual first in the legends
    for ax, d in zip(axes, depths):
        for r in ordered:
            if r["depth"] == d:
                curve = [v if v is not None else math.nan for v in r["train_loss_curve"]]
                ax.plot(range(1, len(curve) + 1), curve, marker=".", alpha=0.8, **{**STYLE[r["residual"]], "label": STYLE[r["residual"]]["label"] if r["seed"] == min(x["seed"] for x in runs) else None})
        ax.set(yscale="log", xlabel="epoch", ylabel="training loss", title=f"{name(d)}")
    paths["loss"] = _save(fig, list(axes), folder / f"{prefix}-train-loss.png")

    paths["gradients"] = gradient_init_figure(runs, depths, lambda d: f"{name(d)}", folder / f"{prefix}-gradient-init.png")
    paths["lesion"] = lesion_figure(runs, depths, lambda d: f"{name(d)}", "test accuracy (%)", folder / f"{prefix}-lesion.png")

    if not any(math.isfinite(a["grad_corr_init"].mean) for a in agg.values()):
        return paths  # not measured (token-id inputs)
    fig, (ax,) = _figure(1)
    for res in (True, False):
        for when, ls in (("init", ":"), ("end", "-")):
            ds = [d for d in depths if (d, res) in agg]
            ax.plot(ds, [agg[(d, res)][f"grad_corr_{when}"].mean for d in ds], marker="o", ls=ls,
                    **{**STYLE[res], "label": f"{STYLE[res]['label']}, {'initialisation' if when == 'init' else 'trained'}"})
    ax.set(xscale="log", xlabel=depth_label, ylabel="cosine of neighbouring input gradients",
           title="Gradient correlation (shattered gradients)", ylim=(-0.05, 1.05))
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.minorticks_off()
    paths["correlation"] = _save(fig, [ax], folder / f"{prefix}-gradient-correlation.png")
    return paths


def gradient_init_figure(runs: Sequence[dict[str, Any]], depths: Sequence[int], title: Callable[[int], str], path: Path) -> Path:
    """Per depth, the first seed's gradient norm w.r.t. each block's input at initialisation, both twins."""
    fig, axes = _figure(len(depths), 3.6)
    first_seed = min(r["seed"] for r in runs)
    ordered = sorted(runs, key=lambda r: (not r["residual"], r["seed"]))  # residual first in the legends
    for ax, d in zip(axes, depths):
        for r in ordered:
            if r["depth"] == d and r["seed"] == first_seed:
                g = r["gradient_flow"]["init"]["input_grad_norm"]
                ax.plot(range(len(g)), [v if v is not None else math.nan for v in g], marker=".", **STYLE[r["residual"]])
        ax.set(yscale="log", xlabel="block (input side first)", ylabel="‖∂L/∂x‖ at block input", title=f"{title(d)}, at init")
    return _save(fig, list(axes), path)


def lesion_figure(runs: Sequence[dict[str, Any]], depths: Sequence[int], title: Callable[[int], str], ylabel: str,
                  path: Path) -> Path:
    """Per depth, the metric with k random blocks removed at test time (mean over draws and seeds), both twins."""
    fig, axes = _figure(len(depths), 3.6)
    for ax, d in zip(axes, depths):
        for res in (True, False):
            curves = [r["lesion"] for r in runs if r["depth"] == d and r["residual"] == res]
            if not curves:
                continue
            ks = sorted({p["k"] for c in curves for p in c["random"]})
            means = [statistics.fmean(c["baseline"] for c in curves)]
            means += [statistics.fmean(p["mean"] for c in curves for p in c["random"] if p["k"] == k) for k in ks]
            ax.plot([0] + ks, means, marker="o", ms=3, **STYLE[res])
        ax.set(xlabel="random blocks removed", ylabel=ylabel, title=f"{title(d)}, lesioned at test time")
    return _save(fig, list(axes), path)


def _save(fig: Any, axes: list[Any], path: Path) -> Path:
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        if ax.get_xscale() == "linear":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[1]:
            ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)
    return path


# --------------------------------------------------------------------------- markdown


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _table(rows: list[list[str]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def verdict_lines(vs: Sequence[Verdict]) -> list[str]:
    """A domain's verdicts as Markdown: the claim and verdict, then its rule, measurement and anchor."""
    lines: list[str] = []
    for v in vs:
        lines += [f"#### {v.claim}: **{v.verdict}**", "", f"- Rule: {v.rule}", f"- Measured: {v.evidence}", f"- Anchor: {v.anchor}", ""]
    return lines


def _body(agg: dict[tuple[int, bool], dict[str, Stat]], depths: Sequence[int], rel: dict[str, str],
          anchors: dict[str, str], flow_note: str, depth_label: str, setting: str,
          extra_columns: Sequence[tuple[str, Callable[[dict[str, Stat]], str]]] = ()) -> list[str]:
    """A domain section's verdicts, figures and table (the same for every domain)."""
    lines = [
        "### Verdicts",
        "",
        "Each verdict is computed from the numbers below by the rule next to it. *Noise* is the larger spread "
        f"(max − min over seeds) of the two twins at that depth, and at least {FLOORS['acc']:g} accuracy points, "
        f"{FLOORS['loss']:g} in loss, {FLOORS['lesion']:g} % for lesion drops. These are claims about this setting "
        f"{setting}; the anchors are the published numbers for theirs.",
        "",
    ]
    single = [f"{d} ({'residual' if r else 'plain'})" for d in depths for r in (True, False)
              if (d, r) in agg and len(agg[(d, r)]["test_acc"].values) < 2]
    if single:
        lines += [f"One seed only at {', '.join(single)}: there the noise is the floor alone, not a measured spread, "
                  "so a verdict leaning on those points is weaker than its wording.", ""]
    lines += verdict_lines(verdicts(agg, anchors))
    lines += [
        "### Figures",
        "",
        f"![Test and training accuracy against depth]({rel['accuracy']})",
        "",
        f"![Training loss per epoch]({rel['loss']})",
        "",
        f"Gradient norm w.r.t. each block's input at initialisation ({flow_note}), first seed:",
        "",
        f"![Gradient norm by block at initialisation]({rel['gradients']})",
        "",
        "Lesions (Veit et al. 2016): test accuracy with k random blocks removed at test time, among the blocks both twins "
        "can remove (a residual block keeps its shortcut, a plain block is skipped), mean over draws and seeds:",
        "",
        f"![Lesion curves]({rel['lesion']})",
        "",
    ]
    for key, caption in (("correlation", "Gradient correlation"), ("rank", "Rank collapse by layer")):
        if key in rel:
            lines += [f"![{caption}]({rel[key]})", ""]
    lines += [
        "### Table",
        "",
        "Means ± standard deviations over seeds. Gradient ratio: log10 of the input-gradient norm at the first block over "
        "that at the last, at initialisation (< 0 vanishing, > 0 growing toward the input). Lesion drop: mean share (%) of "
        "the above-chance test accuracy lost when one block is removed (– for a twin near chance). Gradient correlation: "
        "cosine of the input gradients of neighbouring inputs, trained (– where the input is token ids). s / run: wall "
        "time of the run (training and measurements) on a shared machine.",
        "",
    ]
    rows = []
    for d in depths:
        for res in (True, False):
            if (d, res) not in agg:
                continue
            a = agg[(d, res)]
            rows.append([str(d), "residual" if res else "plain", f"{int(a['params'].mean):,}", a["test_acc"].fmt(), a["train_acc"].fmt(),
                         a["gap"].fmt(), a["train_loss"].fmt(4), a["attenuation_init"].fmt(), a["lesion_drop"].fmt(),
                         a["grad_corr_end"].fmt(3)] + [fn(a) for _, fn in extra_columns] + [f"{a['seconds'].mean:.0f}"])
    lines += [_table(rows, [depth_label, "twin", "params", "test acc %", "train acc %", "gap", "train loss", "gradient ratio (init)",
                            "lesion drop", "grad. corr."] + [name for name, _ in extra_columns] + ["s / run"]), ""]
    return lines


def image_section(runs: Sequence[dict[str, Any]], md_dir: Path, fig_dir: Path) -> str:
    agg = aggregate(runs)
    depths = sorted({d for d, _ in agg})
    seeds = sorted({r["seed"] for r in runs})
    r0 = runs[0]
    rec, final = r0["recipe"], r0["final"]
    dataset = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST"}.get(r0["dataset"], r0["dataset"])
    devices = sorted({r["device"] for r in runs})
    sweep_minutes = sum(_num(r["wall_seconds"]["total"], 0.0) for r in runs) / 60
    paths = figures(runs, agg, fig_dir)
    rel = {k: os.path.relpath(v, md_dir).replace(os.sep, "/") for k, v in paths.items()}

    lines = [
        f"## Image: CIFAR-style ResNets on {dataset}",
        "",
        f"{len(runs)} runs: depths {', '.join(map(str, depths))} × {{residual, plain}} × seeds {', '.join(map(str, seeds))}, "
        f"one recipe for every run: {_plural(rec['epochs'], 'epoch')} on a fixed subset of {final['train_images']:,} training images, "
        f"batch {rec['batch_size']}, {rec['optimizer']}, lr {rec['lr']} with {rec['schedule']}, {rec['augmentation']}, "
        f"{'float32' if r0['precision'] == 'float32' else r0['precision'] + ' autocast'}"
        f"{', channels_last' if rec.get('channels_last', True) else ''}; init: {rec['init']}. Test accuracy on all {final['test_images']:,} test "
        f"images; training accuracy on the training subset without augmentation; lesions on {rec['lesion_images']:,} test "
        f"images. Device: {', '.join(devices)}; {sweep_minutes:.1f} min for the whole sweep.",
        "",
        "**Shortened compared with the anchors** (He et al. 2016, CIFAR-10):",
        "",
        _table([
            ["data", f"{dataset}, 28×28 grayscale, {final['train_images']:,} of 60,000 training images", "CIFAR-10, 32×32 RGB, 50k training images (schedule set on a 45k/5k split)"],
            ["training", f"{_plural(rec['epochs'], 'epoch')} ({r0['steps']:,} steps)", "64k steps (~164 epochs), lr 0.1 divided by 10 at 32k and 48k"],
            ["warm-up", f"every run, first {rec['warmup_frac']:.0%} of steps from lr/10", "ResNet-110 only: lr 0.01 until training error < 80 % (~400 steps)"],
            ["augmentation", rec["augmentation"], "4-pixel padding, random 32×32 crop, horizontal flip"],
            ["seeds", str(len(seeds)), "1 (ResNet-110: best of 5 runs, mean 6.61 ± 0.16 %)"],
        ], ["", "here", "He et al. 2016"]),
        "",
    ]
    flow_note = ("BatchNorm on batch statistics, the first "
                 f"{rec['flow_images']} training images, cross-entropy")
    lines += _body(agg, depths, rel, IMAGE_ANCHORS, flow_note, "depth", "(short training, small images)")
    return "\n".join(lines)


TEXT_ANCHORS = {
    "1": "Dong et al. 2021 (arXiv:2103.03404) prove that a pure self-attention network without skip connections loses "
         "rank doubly exponentially with depth (every token's state converges to the same vector), and that skip "
         "connections prevent it; they do not frame this as vanishing gradients and give no training-loss comparison.",
    "2": "Dong et al. 2021 report no accuracy of residual vs plain encoders trained from scratch on a classification "
         "task; their claim is about the collapse of the token representations (see the rank-collapse figure).",
    "3": "Dong et al. 2021: without skips the collapse to rank 1 is doubly exponential in depth, so a deeper plain "
         "encoder should lose more of what distinguishes tokens; no trainability-vs-depth curve is given.",
    "4": "Dong et al. 2021 decompose a self-attention network into paths through subsets of its attention layers: "
         "skips are what create the short paths, and short paths are the ones that do not collapse (the text analogue "
         "of Veit et al. 2016's lesion result on images).",
    "5": "Not claimed by Dong et al. 2021.",
}

SPEECH_ANCHORS = {
    "1": "No published residual-vs-plain ablation of this TDNN is known to this report. He et al. 2016 (images): deeper "
         "plain nets train worse, which they do not attribute to vanishing gradients.",
    "2": "{tdnn_anchor}",
    "3": "No published anchor for TDNNs; He et al. 2016 Fig. 6 for images (plain-56 trains worse than plain-20).",
    "4": "Veit et al. 2016 (images): single blocks of a ResNet can be removed at small cost, layers of a plain net cannot.",
    "5": "Not claimed by the anchors.",
}


def _tdnn_anchor() -> str:
    """The registry's own residual-vs-plain numbers of tdnn-fsdd-digits on its held-out speaker (read, not typed)."""
    from reszoo.registry import info

    entry = info("tdnn-fsdd-digits")
    pair = entry.extra.get("heldout_speaker_accuracy_residual_vs_plain") or {}
    res, plain = pair.get("residual") or {}, pair.get("plain") or {}
    folds = [f for f in res if f in plain]
    if not folds:
        return "tdnn-fsdd-digits has no held-out-speaker comparison in registry.yaml."
    shown = "; ".join(f"{f}: {100 * res[f]:.1f} % residual vs {100 * plain[f]:.1f} % plain" for f in folds)
    return (f"This repository's own tdnn-fsdd-digits twins (3 blocks, {entry.extra.get('epochs', '?')} epochs, seed "
            f"{entry.extra.get('seed', '?')}; registry.yaml, measured by scripts/train_fsdd.py digits-heldout), held-out "
            f"speaker {shown}.")


def _intro(runs: Sequence[dict[str, Any]]) -> tuple[list[int], list[int], float, list[str]]:
    """Depths, seeds, minutes of wall time in all, devices."""
    depths = sorted({r["depth"] for r in runs})
    seeds = sorted({r["seed"] for r in runs})
    return depths, seeds, sum(_num(r["wall_seconds"]["total"], 0.0) for r in runs) / 60, sorted({r["device"] for r in runs})


def _missing(runs: Sequence[dict[str, Any]], domain: str, unit: str) -> str:
    """The (depth, twin, seed) points of the planned grid that have no run, said plainly (never filled in)."""
    depths, seeds = PLANNED[domain]
    have = {(r["depth"], r["residual"], r["seed"]) for r in runs}
    gone = [f"{d} {unit} {'residual' if res else 'plain'} seed {s}" for d in depths for s in seeds for res in (True, False)
            if (d, res, s) not in have]
    return ("**Not run** (no result; nothing is extrapolated): " + "; ".join(gone) + ".\n") if gone else ""


def rank_figure(runs: Sequence[dict[str, Any]], folder: Path, prefix: str) -> Path | None:
    """Token residual by layer (Dong et al.'s rank collapse), deepest depth, first seed, at init and trained."""
    measured = [r for r in runs if (r.get("domain_measures") or {}).get("init")]
    if not measured:
        return None
    deep, first = max(r["depth"] for r in measured), min(r["seed"] for r in measured)
    fig, axes = _figure(2)
    for ax, when in zip(axes, ("init", "end")):
        for r in sorted(measured, key=lambda r: not r["residual"]):
            if r["depth"] == deep and r["seed"] == first:
                v = r["domain_measures"][when]["token_residual_by_layer"]
                ax.plot(range(1, len(v) + 1), [x if x is not None else math.nan for x in v], marker="o", **STYLE[r["residual"]])
        ax.set(xlabel="encoder layer", ylabel="‖X − 1x̄ᵀ‖ / ‖X‖ (token states)", ylim=(-0.02, 1.02),
               title=f"{deep} layers, {'at initialisation' if when == 'init' else 'trained'}")
    return _save(fig, list(axes), folder / f"{prefix}-rank-collapse.png")


def _last_layer_residual(when: str) -> Callable[[dict[str, Stat]], str]:
    return lambda a: a[f"token_residual_{when}"].fmt(3)


def text_section(runs: Sequence[dict[str, Any]], md_dir: Path, fig_dir: Path) -> str:
    agg = aggregate(runs)
    for r in runs:  # the text domain's own measure: the last layer's token residual
        m = r.get("domain_measures") or {}
        for when in ("init", "end"):
            v = (m.get(when) or {}).get("token_residual_by_layer") or [None]
            agg[(r["depth"], r["residual"])].setdefault(f"token_residual_{when}", Stat([])).values.append(_num(v[-1]))
    depths, seeds, minutes, devices = _intro(runs)
    r0 = runs[0]
    rec, final, data = r0["recipe"], r0["final"], r0.get("data", {})
    paths = figures(runs, agg, fig_dir, "text", "encoder layers", "layers")
    rank = rank_figure(runs, fig_dir, "text")
    if rank:
        paths["rank"] = rank
    rel = {k: os.path.relpath(v, md_dir).replace(os.sep, "/") for k, v in paths.items()}
    lines = [
        "## Text: Transformer encoders from scratch on BANKING77",
        "",
        f"{len(runs)} runs: {', '.join(map(str, depths))} encoder layers (each two residual blocks: self-attention and "
        f"feed-forward) × {{residual, plain}} × seeds {', '.join(map(str, seeds))}; model: {rec['model']}; tokenizer: "
        f"{rec['tokenizer']} ({data.get('vocab_size', '?')} words). One recipe for every run: "
        f"{_plural(rec['epochs'], 'epoch')} on {final['train_samples']:,} training queries, batch {rec['batch_size']}, "
        f"{rec['optimizer']}, lr {rec['lr']} with {rec['schedule']}; init: {rec['init']}; float32. Test accuracy on all "
        f"{final['test_samples']:,} test queries ({r0['classes']} intents, chance {100 / r0['classes']:.1f} %); training accuracy on the training queries "
        f"in eval mode; lesions and rank collapse on {rec['lesion_samples']:,} test queries. Device: {', '.join(devices)}; "
        f"{minutes:.1f} min for the whole sweep (wall time, shared machine). `scripts/residual_study.py text`.",
        "",
        _missing(runs, "text", "layers"),
        "**Shortened compared with the anchor** (Dong et al. 2021):",
        "",
        _table([
            ["models", f"encoders of hidden {rec['hidden']}, {rec['heads']} heads, {', '.join(map(str, depths))} layers, "
                       "trained from scratch, residual vs plain", "self-attention networks with and without skips (theory), and "
                       "published Transformers such as BERT"],
            ["data", f"BANKING77 intents, {final['train_samples']:,} queries, ≤ {rec['max_length']} word tokens",
             "– (a theorem, illustrated on published models)"],
            ["training", f"{_plural(rec['epochs'], 'epoch')} ({r0['steps']:,} steps)", "– (no training recipe compared)"],
            ["measure", "accuracy, gradients, lesions, and the token residual per layer", "the token residual (rank collapse)"],
            ["seeds", str(len(seeds)), "–"],
        ], ["", "here", "Dong et al. 2021"]),
        "",
    ]
    flow_note = "dropout on, the first " f"{rec['flow_samples']} training queries, cross-entropy"
    lines += _body(agg, depths, rel, TEXT_ANCHORS, flow_note, "layers",
                   "(small encoders trained from scratch for a few epochs)",
                   [("token residual, last layer (init)", _last_layer_residual("init")),
                    ("token residual, last layer (trained)", _last_layer_residual("end"))])
    lines.insert(lines.index("### Table") + 4,
                 "Token residual: Dong et al.'s ‖X − 1x̄ᵀ‖ / ‖X‖ of the last layer's token states (real tokens; mean over "
                 "the lesion queries, eval mode): 0 means every token of a query has the same state (rank collapse).")
    lines.insert(lines.index("### Table") + 5, "")
    return "\n".join(lines)


def speech_section(runs: Sequence[dict[str, Any]], md_dir: Path, fig_dir: Path) -> str:
    agg = aggregate(runs)
    depths, seeds, minutes, devices = _intro(runs)
    r0 = runs[0]
    rec, final, data = r0["recipe"], r0["final"], r0.get("data", {})
    paths = figures(runs, agg, fig_dir, "speech", "SE-Res2Net blocks", "blocks")
    rel = {k: os.path.relpath(v, md_dir).replace(os.sep, "/") for k, v in paths.items()}
    lines = [
        "## Speech: conv-TDNNs on spoken digits, tested on an unseen speaker",
        "",
        f"{len(runs)} runs: {', '.join(map(str, depths))} SE-Res2Net blocks × {{residual, plain}} × seeds "
        f"{', '.join(map(str, seeds))}; model: {rec['model']}. The plain twin drops the skip around each block; the MFA "
        "concatenation of every block's output stays in both twins (it is part of the architecture, and gives even the "
        "plain twin a path from each block to the pooling). Train: the 5 speakers "
        f"{', '.join(data.get('train_speakers', []))}, takes 5-49 ({final['train_samples']:,} recordings); test: all "
        f"{final['test_samples']} recordings of {data.get('heldout_speaker', '?')}, never heard in training (as "
        "`scripts/train_fsdd.py digits-heldout`). One recipe for every run: "
        f"{_plural(rec['epochs'], 'epoch')}, batch {rec['batch_size']} (grouped by length), {rec['optimizer']}, lr {rec['lr']} "
        f"with {rec['schedule']}, cross-entropy with label smoothing {rec['label_smoothing']}, {rec['augmentation']}; "
        f"init: {rec['init']}; float32. Train and test accuracy in eval mode on length-sorted, masked batches of 64; "
        f"lesions on the {rec['lesion_samples']} test recordings; gradient correlation on test recordings cut to "
        f"{rec['correlation_frames']} frames. Device: {', '.join(devices)}; {minutes:.1f} min for the whole sweep (wall "
        "time, shared machine). `scripts/residual_study.py speech`.",
        "",
        _missing(runs, "speech", "blocks"),
        "**Shortened compared with the anchor** (tdnn-fsdd-digits, `scripts/train_fsdd.py`):",
        "",
        _table([
            ["depth", f"{', '.join(map(str, depths))} blocks", "3 blocks"],
            ["training", f"{_plural(rec['epochs'], 'epoch')} ({r0['steps']:,} steps)", "20 epochs, one-cycle schedule"],
            ["evaluation", "length-sorted masked batches", "one recording at a time, unpadded"],
            ["seeds", str(len(seeds)), "1 (seed 0)"],
        ], ["", "here", "tdnn-fsdd-digits"]),
        "",
    ]
    flow_note = "BatchNorm on batch statistics, the first " f"{rec['flow_samples']} training recordings, cross-entropy"
    anchors = {**SPEECH_ANCHORS, "2": _tdnn_anchor()}
    lines += _body(agg, depths, rel, anchors, flow_note, "blocks", "(small TDNNs, a few epochs, 5 training speakers)")
    return "\n".join(lines)


# What a domain without runs still needs (said plainly in the report, never filled in).
NOT_YET = {
    "text": "the sweep's runs: `scripts/residual_study.py text`",
    "speech": "the sweep's runs: `scripts/residual_study.py speech`",
    "rl": "the sweep's runs: `scripts/residual_study.py rl`",
    "gan": "the sweep's runs: `scripts/residual_study.py gan`",
}


Section = Callable[[Sequence[dict[str, Any]], Path, Path], str]


def sections() -> dict[str, tuple[str, Section, Callable[[Sequence[dict[str, Any]]], list[Verdict]]]]:
    """Every domain but images, in report order: (title in the summary, section writer, verdicts of its runs)."""
    from residual_report_rl_gan import aggregate as rl_gan_aggregate  # it builds on this module
    from residual_report_rl_gan import gan_section, gan_verdicts, rl_section, rl_verdicts

    return {
        "text": ("text (Transformer, BANKING77)", text_section, lambda runs: verdicts(aggregate(runs), TEXT_ANCHORS)),
        "speech": ("speech (TDNN, unseen speaker)", speech_section, lambda runs: verdicts(aggregate(runs), SPEECH_ANCHORS)),
        "rl": ("RL (SimBa SAC, Pendulum)", rl_section, lambda runs: rl_verdicts(rl_gan_aggregate(runs, "rl"))),
        "gan": ("GAN (SNGAN, MNIST)", gan_section, lambda runs: gan_verdicts(rl_gan_aggregate(runs, "gan"))),
    }


def summary(columns: Sequence[tuple[str, Sequence[Verdict]]]) -> str:
    """The five claims (rows) by domain (columns): each cell the domain's verdict, as its section computes it."""
    claims = [v.claim for v in columns[0][1]]
    rows = [[claim] + [next((v.verdict for v in vs if v.claim.split(".")[0] == claim.split(".")[0]), "–") for _, vs in columns]
            for claim in claims]
    return _table(rows, ["claim"] + [title for title, _ in columns])


def write_report(results: Path, out: Path, figures: Path | None = None) -> Path:
    """Write the Markdown report to ``out`` and its figures to ``figures`` (default ``<out dir>/img/residual-study``)."""
    out = Path(out)
    fig_dir = Path(figures) if figures else out.parent / "img" / "residual-study"
    runs = load_runs(Path(results), "image")
    if not runs:
        raise SystemExit(f"no results in {Path(results) / 'image' / 'runs'}: run `scripts/residual_study.py image` first")
    parts = [
        "# Residual vs plain twins: what the skip connections do here",
        "",
        "Generated by `python scripts/residual_study.py report` from the JSON results in "
        f"`{_shown(results)}/<domain>/runs/`; do not edit by hand. Each run trains a model and its plain twin "
        "(`residual=False`: the same layers without the skip additions) with the same recipe and budget, and measures "
        "them with `reszoo.analysis` (gradient flow, branch ratio, lesions, gradient correlation).",
        "",
    ]
    body = [image_section(runs, out.parent, fig_dir)]
    columns: list[tuple[str, Sequence[Verdict]]] = [("image (ResNet, Fashion-MNIST)", verdicts(aggregate(runs)))]
    for domain, (title, section, domain_verdicts) in sections().items():
        domain_runs = load_runs(Path(results), domain)
        if domain_runs:
            body += [section(domain_runs, out.parent, fig_dir), ""]
            columns.append((title, domain_verdicts(domain_runs)))
    parts += ["## Verdicts at a glance", "",
              "Each cell is the verdict its domain's section below computes from that domain's runs, by the rule stated "
              "there (the claims are worded per domain: accuracy, return, sample quality).", "",
              summary(columns), "", *body]
    missing = [[d, "not measured yet", NOT_YET.get(d, "")] for d in DOMAINS if d != "image" and not load_runs(Path(results), d)]
    if missing:
        parts += ["## Other domains", "", _table(missing, ["domain", "status", "what is missing"]), ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts), encoding="utf-8")
    return out


def _shown(path: Path) -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)
