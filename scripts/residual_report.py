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
            "grad_corr_init": _num(r["gradient_correlation"]["init"]["correlation"][0]),
            "grad_corr_end": _num(r["gradient_correlation"]["end"]["correlation"][0]),
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


def verdicts(agg: dict[tuple[int, bool], dict[str, Stat]]) -> list[Verdict]:
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
        "He et al. 2016 (§4.1, Figs. 4 and 6): deeper plain nets have higher *training* error, ResNets do not; they argue "
        "this is not caused by vanishing gradients, since with BatchNorm the plain nets' backward signals have healthy norms.",
    ))

    # (2) raises accuracy
    wins, losses, notes = _tally(agg, depths, "test_acc", FLOORS["acc"], lambda r, p: r - p)
    out.append(Verdict(
        "2. Raises accuracy",
        _count_verdict(wins, losses, len(depths)),
        "Per depth, residual − plain test accuracy counts if it exceeds the noise. Supported: better at ≥ half of the "
        "depths and worse at none; not supported: better at none; otherwise mixed.",
        f"residual − plain test accuracy (points) by depth: {'; '.join(notes)}.",
        "He et al. 2016, Table 6 (CIFAR-10 test error): ResNet-20 8.75 %, -32 7.51 %, -44 7.17 %, -56 6.97 %, -110 6.43 % "
        "(6.61 ± 0.16 over 5 runs); ImageNet (Table 2, top-1 error): plain-34 28.54 % vs ResNet-34 25.03 %.",
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
        "He et al. 2016, Fig. 6 (CIFAR-10): training error rises from plain-20 to plain-56 (and plain-110 stays above "
        "60 %), while ResNet-20 → 110 keeps falling.",
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
        "Veit et al. 2016 (arXiv:1605.06431): removing a single block of a CIFAR-10 ResNet-110 barely changes its error "
        "(except some downsampling blocks), removing any layer of a plain VGG drops it to chance; the error of a ResNet "
        "grows smoothly with the number of blocks removed.",
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
        "He et al. 2016 do not claim it: their 1202-layer ResNet reaches a training error like the 110-layer one's but a "
        "higher test error (7.93 % vs 6.43 %), which they attribute to overfitting.",
    ))
    return out


# --------------------------------------------------------------------------- figures


def _figure(ncols: int, width: float = 5.0) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, 3.8), layout="constrained")
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


STYLE = {True: dict(color="C0", label="residual"), False: dict(color="C3", label="plain")}


def figures(runs: Sequence[dict[str, Any]], agg: dict[tuple[int, bool], dict[str, Stat]], folder: Path) -> dict[str, Path]:
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
    ax.set(xscale="log", xlabel="depth (layers)", ylabel="test accuracy (%)", title="Test accuracy (mean ± std over seeds)")
    ax2.set(xscale="log", xlabel="depth (layers)", ylabel="training accuracy (%)", title="Training accuracy (no augmentation)")
    for a in (ax, ax2):
        a.set_xticks(depths, [str(d) for d in depths])
        a.minorticks_off()
    paths["accuracy"] = _save(fig, [ax, ax2], folder / "image-accuracy-vs-depth.png")

    fig, axes = _figure(len(depths), 3.6)
    ordered = sorted(runs, key=lambda r: (not r["residual"], r["seed"]))  # residual first in the legends
    for ax, d in zip(axes, depths):
        for r in ordered:
            if r["depth"] == d:
                curve = [v if v is not None else math.nan for v in r["train_loss_curve"]]
                ax.plot(range(1, len(curve) + 1), curve, marker=".", alpha=0.8, **{**STYLE[r["residual"]], "label": STYLE[r["residual"]]["label"] if r["seed"] == min(x["seed"] for x in runs) else None})
        ax.set(yscale="log", xlabel="epoch", ylabel="training loss", title=f"depth {d}")
    paths["loss"] = _save(fig, list(axes), folder / "image-train-loss.png")

    fig, axes = _figure(len(depths), 3.6)
    first_seed = min(r["seed"] for r in runs)
    for ax, d in zip(axes, depths):
        for r in ordered:
            if r["depth"] == d and r["seed"] == first_seed:
                g = r["gradient_flow"]["init"]["input_grad_norm"]
                ax.plot(range(len(g)), [v if v is not None else math.nan for v in g], marker=".", **STYLE[r["residual"]])
        ax.set(yscale="log", xlabel="block (input side first)", ylabel="‖∂L/∂x‖ at block input", title=f"depth {d}, at init")
    paths["gradients"] = _save(fig, list(axes), folder / "image-gradient-init.png")

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
        ax.set(xlabel="random blocks removed", ylabel="test accuracy (%)", title=f"depth {d}, lesioned at test time")
    paths["lesion"] = _save(fig, list(axes), folder / "image-lesion.png")

    fig, (ax,) = _figure(1)
    for res in (True, False):
        for when, ls in (("init", ":"), ("end", "-")):
            ds = [d for d in depths if (d, res) in agg]
            ax.plot(ds, [agg[(d, res)][f"grad_corr_{when}"].mean for d in ds], marker="o", ls=ls,
                    **{**STYLE[res], "label": f"{STYLE[res]['label']}, {'initialisation' if when == 'init' else 'trained'}"})
    ax.set(xscale="log", xlabel="depth (layers)", ylabel="cosine of neighbouring input gradients",
           title="Gradient correlation (shattered gradients)", ylim=(-0.05, 1.05))
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.minorticks_off()
    paths["correlation"] = _save(fig, [ax], folder / "image-gradient-correlation.png")
    return paths


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
        "### Verdicts",
        "",
        "Each verdict is computed from the numbers below by the rule next to it. *Noise* is the larger spread "
        f"(max − min over seeds) of the two twins at that depth, and at least {FLOORS['acc']:g} accuracy points, "
        f"{FLOORS['loss']:g} in loss, {FLOORS['lesion']:g} % for lesion drops. These are claims about this setting "
        "(short training, small images); the anchors are the published numbers for theirs.",
        "",
    ]
    for v in verdicts(agg):
        lines += [f"#### {v.claim}: **{v.verdict}**", "", f"- Rule: {v.rule}", f"- Measured: {v.evidence}", f"- Anchor: {v.anchor}", ""]
    lines += [
        "### Figures",
        "",
        f"![Test and training accuracy against depth]({rel['accuracy']})",
        "",
        f"![Training loss per epoch]({rel['loss']})",
        "",
        "Gradient norm w.r.t. each block's input at initialisation (BatchNorm on batch statistics, the first "
        f"{rec['flow_images']} training images, cross-entropy), first seed:",
        "",
        f"![Gradient norm by block at initialisation]({rel['gradients']})",
        "",
        "Lesions (Veit et al. 2016): test accuracy with k random blocks removed at test time, among the blocks both twins "
        "can remove (a residual block keeps its shortcut, a plain block is skipped), mean over draws and seeds:",
        "",
        f"![Lesion curves]({rel['lesion']})",
        "",
        f"![Gradient correlation]({rel['correlation']})",
        "",
        "### Table",
        "",
        "Means ± standard deviations over seeds. Gradient ratio: log10 of the input-gradient norm at the first block over "
        "that at the last, at initialisation (< 0 vanishing, > 0 growing toward the input). Lesion drop: mean share (%) of "
        "the above-chance test accuracy lost when one block is removed (– for a twin near chance). Gradient correlation: cosine of the input gradients of neighbouring inputs, trained.",
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
                         a["grad_corr_end"].fmt(3), f"{a['seconds'].mean:.0f}"])
    lines += [_table(rows, ["depth", "twin", "params", "test acc %", "train acc %", "gap", "train loss", "gradient ratio (init)",
                            "lesion drop", "grad. corr.", "s / run"]), ""]
    return "\n".join(lines)


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
        image_section(runs, out.parent, fig_dir),
        "## Other domains",
        "",
        _table([[d, "not measured yet"] for d in DOMAINS if d != "image" and not load_runs(Path(results), d)], ["domain", "status"]),
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts), encoding="utf-8")
    return out


def _shown(path: Path) -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)
