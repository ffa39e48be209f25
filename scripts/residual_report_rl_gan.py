"""The RL and GAN sections of ``docs/residual-study.md``, from ``scripts/residual_rl.py`` and
``scripts/residual_gan.py`` records.

Their verdicts follow the classifier sections' rules (a difference counts when it exceeds the spread
over seeds of either twin, and a floor), on each domain's own measures: RL scores episode returns
(higher is better), GANs the Frechet distance of resnet-mnist features to the test set (lower is
better) and class accuracy. Where a claim has no measure in a domain, the verdict says so.
"""

from __future__ import annotations

import math
import os
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from residual_report import (GRAD_DECADE, STYLE, Stat, Verdict, _count_verdict, _figure, _missing, _noise, _num,
                             _plural, _save, _table, _tally, attenuation, gradient_init_figure, lesion_figure, verdict_lines)

Agg = dict[tuple[int, bool], dict[str, Stat]]
FLOORS = {"return": 10.0, "fd": 0.02, "acc": 0.5, "lesion": 2.0}
MIN_ABOVE_CHANCE_RETURN = 100.0  # an agent this close to the random policy has learnt nothing a lesion could remove
MIN_ABOVE_CHANCE_ACC = 10.0
COMPARABLE_FD = 1.5  # twins whose FDs to the test set are within this factor fit the data alike


def lesion_share(lesion: dict[str, Any], chance: float, minimum: float) -> float:
    """Mean share (%) of the above-chance metric lost when one block is removed, over ``candidates``;
    NaN when the intact model is within ``minimum`` of chance or no candidate exists."""
    above = lesion["baseline"] - chance
    if above < minimum:
        return float("nan")
    candidates = set(lesion.get("candidates") or [])
    drops = [100 * (lesion["baseline"] - v) / above for b, v in zip(lesion["blocks"], lesion["single"])
             if b in candidates and v is not None]
    return statistics.fmean(drops) if drops else float("nan")


def _corr(result: dict[str, Any] | None) -> float:
    return _num(result["correlation"][0]) if result else float("nan")


def aggregate(runs: Sequence[dict[str, Any]], domain: str) -> Agg:
    """Per (depth, residual): each measure over the seeds."""
    groups: dict[tuple[int, bool], dict[str, Stat]] = defaultdict(lambda: defaultdict(lambda: Stat([])))
    for r in runs:
        f = r["final"]
        if domain == "rl":
            values = {"test": _num(f["test_return"]), "train": _num(f["train_return"]),
                      "flow_a": attenuation(r["gradient_flow"]["init"]), "flow_b": attenuation(r["actor_gradient_flow"]["init"]),
                      "lesion_drop": lesion_share(r["lesion"], r["lesion"]["chance"], MIN_ABOVE_CHANCE_RETURN)}
        else:
            values = {"test": _num(f["fd_test"]), "train": _num(f["fd_train"]), "acc": _num(f["class_accuracy"]),
                      "gap": _num(f["fd_gap"]), "flow_a": attenuation(r["gradient_flow"]["init"]),
                      "flow_b": attenuation(r["d_gradient_flow"]["init"]),
                      "lesion_drop": lesion_share(r["lesion"], 10.0, MIN_ABOVE_CHANCE_ACC)}
        values |= {"grad_corr_init": _corr(r["gradient_correlation"]["init"]),
                   "grad_corr_end": _corr(r["gradient_correlation"]["end"]),
                   "params": float(r["params"]), "seconds": _num(r["wall_seconds"]["total"])}
        for key, value in values.items():
            groups[(r["depth"], r["residual"])][key].values.append(value)
    return {k: dict(v) for k, v in groups.items()}


RL_ANCHORS = {
    "1": "Lee et al. 2024 (SimBa, arXiv:2410.09754): plain MLP critics and actors get harder to optimise as they grow, "
         "SimBa's residual blocks (with pre-LayerNorm and a running observation normaliser) keep improving.",
    "2": "SimBa, Fig. 1 and §5: SAC with SimBa networks beats SAC with MLPs of the same size on DMC, MuJoCo and "
         "HumanoidBench, and the gap grows with the number of parameters.",
    "3": "SimBa, Fig. 7 (scaling): the residual agent's return keeps rising from 1 to 8+ blocks where the MLP's falls.",
    "4": "No RL lesion study is known to this report; Veit et al. 2016 for images.",
    "5": "SimBa's claim is a simplicity bias, not a smaller train-test gap; no RL anchor.",
}

GAN_ANCHORS = {
    "1": "Miyato et al. 2018 (arXiv:1802.05957) train both a standard CNN and a ResNet with spectral normalisation; "
         "they do not compare gradient norms. Gulrajani et al. 2017 (WGAN-GP) use ResNets for deeper G and D.",
    "2": "Miyato et al. 2018, Table 2 (CIFAR-10, unconditional): SN-GAN with the standard CNN reaches inception score "
         "7.42 / FID 29.3, with the ResNet 8.22 / 21.7.",
    "3": "Miyato et al. 2018 do not sweep depth; their ResNet G and D are deeper than the CNN ones and train better.",
    "4": "No GAN lesion study is known to this report; Veit et al. 2016 for images.",
    "5": "Not claimed for GANs; a generator nearer its training images than to the test set (larger FD gap than "
         "the real data's) would be memorising.",
}


def _gradient_part(agg: Agg, deep: int, key: str) -> tuple[bool, str]:
    res, plain = agg[(deep, True)][key].mean, agg[(deep, False)][key].mean
    ok = abs(plain) >= GRAD_DECADE and abs(res) < GRAD_DECADE
    return ok, f"residual {res:+.2f}, plain {plain:+.2f}"


def _degradation(agg: Agg, depths: Sequence[int], key: str, floor: float, higher_better: bool) -> tuple[str, str]:
    deep = depths[-1]
    sign = 1 if higher_better else -1
    drop = {res: max(sign * agg[(d, res)][key].mean for d in depths) - sign * agg[(deep, res)][key].mean for res in (True, False)}
    noise = _noise(agg, deep, key, floor)
    plain_degrades, res_holds = drop[False] > noise, drop[True] <= noise
    verdict = "supported" if plain_degrades and res_holds else "mixed" if plain_degrades else "not supported"
    return verdict, f"best − deepest ({deep}): plain {drop[False]:.2f}, residual {drop[True]:.2f} (noise {noise:.2f})"


def _lesion_verdict(agg: Agg, depths: Sequence[int]) -> tuple[str, str]:
    usable = [d for d in depths if all(math.isfinite(agg[(d, r)]["lesion_drop"].mean) for r in (True, False))]
    if not usable:  # e.g. a plain twin that learnt nothing: there is no information flow of its to compare
        own = "; ".join(f"{d}: residual {agg[(d, True)]['lesion_drop'].mean:.1f} %" for d in depths
                        if math.isfinite(agg[(d, True)]["lesion_drop"].mean))
        return "not tested", ("no depth where both twins are well above chance and have blocks both can remove"
                              + (f" (the residual twin alone loses, per block removed: {own})" if own else "") + ".")
    wins, _, notes = _tally(agg, usable, "lesion_drop", FLOORS["lesion"], lambda r, p: p - r)
    verdict = "supported" if len(wins) == len(usable) else "not supported" if usable[-1] not in wins else "mixed"
    return verdict, "plain − residual mean share of the above-chance metric lost when one block is removed (%): " + "; ".join(notes) + "."


COUNT_RULE = "Supported: better at ≥ half of the depths and worse at none; not supported: better at none; otherwise mixed."
DEGRADATION_RULE = ("Supported: the plain twin degrades and the residual one does not; mixed: both do; not supported: "
                    "the plain twin does not.")
LESION_RULE = ("Lesion drop = the share of the above-chance metric lost when one block is removed at test time, mean over "
               "the blocks both twins can remove; only where both twins are well above chance. Supported: the residual "
               "twin's drop is smaller by more than the noise at every such depth; not supported: not smaller at the "
               "deepest one; not tested: no such depth; otherwise mixed.")


def rl_verdicts(agg: Agg) -> list[Verdict]:
    depths = sorted({d for d, _ in agg if (d, True) in agg and (d, False) in agg})
    if not depths:
        return []
    deep, floor = depths[-1], FLOORS["return"]
    wins, losses, notes = _tally(agg, depths, "train", floor, lambda r, p: r - p)
    optimisation = deep in wins and not losses
    grads, grad_note = _gradient_part(agg, deep, "flow_a")
    out = [Verdict(
        "1. Eases training / fixes vanishing gradients", ["not supported", "mixed", "supported"][int(optimisation) + int(grads)],
        "(a) optimisation: the residual twin's final training return is higher by more than the noise at the deepest "
        "depth and lower at none; (b) gradients: at initialisation, at the deepest depth, the plain critic's TD-loss "
        "input-gradient norm changes ≥ 10x between its last and first block and the residual critic's does not. Both: "
        "supported; one: mixed; neither: not supported.",
        f"(a) {'yes' if optimisation else 'no'}: residual − plain training return by depth {'; '.join(notes)}. "
        f"(b) {'yes' if grads else 'no'}: log10(first/last block gradient) of the critic at {deep} blocks: {grad_note}; "
        f"of the actor: {_gradient_part(agg, deep, 'flow_b')[1]}.",
        RL_ANCHORS["1"])]
    wins, losses, notes = _tally(agg, depths, "test", floor, lambda r, p: r - p)
    out.append(Verdict("2. Raises the return", _count_verdict(wins, losses, len(depths)),
                       f"Per depth, residual − plain test return counts if it exceeds the noise. {COUNT_RULE}",
                       f"residual − plain test return by depth: {'; '.join(notes)}.", RL_ANCHORS["2"]))
    verdict, note = _degradation(agg, depths, "train", floor, True)
    out.append(Verdict("3. Makes much deeper networks trainable", verdict,
                       "Degradation = the deepest agent's training return below the twin's best over the depths by more "
                       f"than the noise. {DEGRADATION_RULE}",
                       note + "; training return by depth: " + "; ".join(
                           f"{d}: res {agg[(d, True)]['train'].mean:.1f} / plain {agg[(d, False)]['train'].mean:.1f}"
                           for d in depths) + ".", RL_ANCHORS["3"]))
    verdict, note = _lesion_verdict(agg, depths)
    out.append(Verdict("4. Improves information flow (lesion)", verdict, LESION_RULE + " Here: actor blocks, scored by the "
                       "mean deterministic return; chance = a uniform-random policy's return.", note, RL_ANCHORS["4"]))
    out.append(Verdict("5. Reduces overfitting (train − test gap)", "not tested",
                       "No measure here: training and testing are the same environment (test episodes only start from "
                       "unseen states), and the training return is of the exploring, stochastic policy, so their gap "
                       "measures exploration noise, not overfitting.", "–", RL_ANCHORS["5"]))
    return out


def gan_verdicts(agg: Agg) -> list[Verdict]:
    depths = sorted({d for d, _ in agg if (d, True) in agg and (d, False) in agg})
    if not depths:
        return []
    deep, floor = depths[-1], FLOORS["fd"]
    g_ok, g_note = _gradient_part(agg, deep, "flow_a")
    d_ok, d_note = _gradient_part(agg, deep, "flow_b")
    out = [Verdict(
        "1. Eases training / fixes vanishing gradients", ["not supported", "mixed", "supported"][int(g_ok) + int(d_ok)],
        "At initialisation, at the deepest depth: (a) the plain generator's hinge-loss input-gradient norm changes ≥ 10x "
        "between its last and first block and the residual generator's does not; (b) the same for the discriminators. "
        "Both: supported; one: mixed; neither: not supported. (A GAN has no training loss that measures fit: see claim 3.)",
        f"log10(first/last block gradient) at {deep} blocks per stage: generator {g_note} ({'yes' if g_ok else 'no'}); "
        f"discriminator {d_note} ({'yes' if d_ok else 'no'}).", GAN_ANCHORS["1"])]
    wins, losses, notes = _tally(agg, depths, "test", floor, lambda r, p: p - r)
    accuracy = "; ".join(f"{d}: res {agg[(d, True)]['acc'].mean:.1f} / plain {agg[(d, False)]['acc'].mean:.1f}" for d in depths)
    out.append(Verdict("2. Raises sample quality", _count_verdict(wins, losses, len(depths)),
                       "Per depth, plain − residual Fréchet distance to the test set counts if it exceeds the noise (floor "
                       f"{floor:g}). {COUNT_RULE}",
                       f"plain − residual FD by depth: {'; '.join(notes)}. Class accuracy (%): {accuracy}.", GAN_ANCHORS["2"]))
    verdict, note = _degradation(agg, depths, "test", floor, False)
    out.append(Verdict("3. Makes much deeper networks trainable", verdict,
                       "Degradation = the deepest pair's FD to the test set above the twin's best over the depths by more "
                       f"than the noise. {DEGRADATION_RULE}", note + ".", GAN_ANCHORS["3"]))
    verdict, note = _lesion_verdict(agg, depths)
    out.append(Verdict("4. Improves information flow (lesion)", verdict, LESION_RULE + " Here: generator blocks that keep "
                       "their shape (none at 1 block per stage), scored by the class accuracy of 1,000 samples (chance 10 %).",
                       note, GAN_ANCHORS["4"]))
    comparable = [d for d in depths if max(agg[(d, r)]["test"].mean for r in (True, False))
                  <= COMPARABLE_FD * min(agg[(d, r)]["test"].mean for r in (True, False))]
    if comparable:
        wins, losses, notes = _tally(agg, comparable, "gap", floor, lambda r, p: p - r)
        verdict, note = _count_verdict(wins, losses, len(comparable)), "plain − residual FD gap (test − train) where the twins' FDs are comparable: " + "; ".join(notes) + "."
    else:
        verdict, note = "not supported", "no depth where the twins' FDs to the test set are within a factor 1.5."
    out.append(Verdict("5. Reduces overfitting (train − test gap)", verdict,
                       "Gap = FD to the test set − FD to the training set (a memorising generator is nearer its training "
                       f"images); compared only where the twins' test FDs are within a factor {COMPARABLE_FD:g}. Supported: "
                       "the residual gap is smaller by more than the noise at ≥ half of those depths and larger at none; not "
                       "supported: smaller at none; otherwise mixed.", note, GAN_ANCHORS["5"]))
    return out


# --------------------------------------------------------------------------- figures


def _n(d: int, unit: str) -> str:
    """``1 block``, ``4 blocks``, ``1 block per stage``."""
    return f"{d} {unit.replace('blocks', 'block', 1) if d == 1 else unit}"


def _by_depth(ax: Any, agg: Agg, key: str, depths: Sequence[int], ls: str = "-") -> None:
    for res in (True, False):
        ds = [d for d in depths if (d, res) in agg]
        ax.errorbar(ds, [agg[(d, res)][key].mean for d in ds], yerr=[agg[(d, res)][key].std for d in ds], marker="o",
                    capsize=3, ls=ls, **STYLE[res])
    ax.set_xscale("log")
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.minorticks_off()


def figures(runs: Sequence[dict[str, Any]], agg: Agg, folder: Path, domain: str) -> dict[str, Path]:
    """Metric vs depth, learning curves, gradient at init by block, lesion curves and gradient correlation."""
    rl = domain == "rl"
    unit = "blocks" if rl else "blocks per stage"
    folder.mkdir(parents=True, exist_ok=True)
    depths = sorted({d for d, _ in agg})
    first = min(r["seed"] for r in runs)
    ordered = sorted(runs, key=lambda r: (not r["residual"], r["seed"]))
    paths: dict[str, Path] = {}

    fig, axes = _figure(2)
    panels = ((("test", "test return"), ("train", "training return (last 10 episodes)")) if rl else
              (("test", "FD to the test set (lower is better)"), ("acc", "class accuracy of samples (%)")))
    for ax, (key, label) in zip(axes, panels):
        _by_depth(ax, agg, key, depths)
        head = label.split(" (")[0]
        ax.set(xlabel=unit, ylabel=label, title=f"{head[0].upper()}{head[1:]} (mean ± std over seeds)")
    paths["metric"] = _save(fig, list(axes), folder / f"{domain}-metric-vs-depth.png")

    fig, axes = _figure(len(depths), 3.6)
    for ax, d in zip(axes, depths):
        for r in ordered:
            if r["depth"] != d:
                continue
            label = STYLE[r["residual"]]["label"] if r["seed"] == first else None
            if rl:
                steps, returns = zip(*r["episode_returns"]) if r["episode_returns"] else ((), ())
                smooth = [statistics.fmean(returns[max(0, i - 9):i + 1]) for i in range(len(returns))]
                ax.plot(steps, smooth, alpha=0.8, **{**STYLE[r["residual"]], "label": label})
            else:
                curve = r["g_loss_curve"]
                ax.plot([100 * (i + 1) for i in range(len(curve))], curve, alpha=0.8, **{**STYLE[r["residual"]], "label": label})
        ax.set(xlabel="environment steps" if rl else "iteration", title=_n(d, unit),
               ylabel="training return (mean of 10 episodes)" if rl else "generator loss (per 100 iterations)")
    paths["curves"] = _save(fig, list(axes), folder / f"{domain}-learning-curves.png")

    paths["gradients"] = gradient_init_figure(runs, depths, lambda d: _n(d, unit), folder / f"{domain}-gradient-init.png")
    lesioned = [d for d in depths if any(r["lesion"]["random"] for r in runs if r["depth"] == d)]
    if lesioned:
        paths["lesion"] = lesion_figure(runs, lesioned, lambda d: _n(d, unit), "mean return" if rl else "class accuracy (%)",
                                        folder / f"{domain}-lesion.png")

    fig, (ax,) = _figure(1)
    for res in (True, False):
        for when, ls in (("init", ":"), ("end", "-")):
            ds = [d for d in depths if (d, res) in agg]
            ax.plot(ds, [agg[(d, res)][f"grad_corr_{when}"].mean for d in ds], marker="o", ls=ls,
                    **{**STYLE[res], "label": f"{STYLE[res]['label']}, {'initialisation' if when == 'init' else 'trained'}"})
    ax.set(xscale="log", xlabel=unit, ylabel="cosine of neighbouring input gradients", ylim=(-0.05, 1.05),
           title="Gradient correlation (" + ("policy w.r.t. the observation)" if rl else "generator w.r.t. its noise)"))
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.minorticks_off()
    paths["correlation"] = _save(fig, [ax], folder / f"{domain}-gradient-correlation.png")
    return paths


# --------------------------------------------------------------------------- sections


def _rows(agg: Agg, depths: Sequence[int], cells: Sequence[tuple[str, Any]]) -> list[list[str]]:
    rows = []
    for d in depths:
        for res in (True, False):
            if (d, res) in agg:
                a = agg[(d, res)]
                rows.append([str(d), "residual" if res else "plain", f"{int(a['params'].mean):,}"]
                            + [fn(a) for _, fn in cells] + [f"{a['seconds'].mean:.0f}"])
    return rows


def _figure_lines(rel: dict[str, str], captions: dict[str, str]) -> list[str]:
    return [line for key, caption in captions.items() if key in rel for line in (caption, "", f"![{key}]({rel[key]})", "")]


def _section(runs: Sequence[dict[str, Any]], md_dir: Path, fig_dir: Path, domain: str) -> tuple[Agg, dict[str, str], list[int], list[int], float]:
    agg = aggregate(runs, domain)
    paths = figures(runs, agg, fig_dir, domain)
    rel = {k: os.path.relpath(v, md_dir).replace(os.sep, "/") for k, v in paths.items()}
    minutes = sum(_num(r["wall_seconds"]["total"], 0.0) for r in runs) / 60
    return agg, rel, sorted({r["depth"] for r in runs}), sorted({r["seed"] for r in runs}), minutes


def rl_section(runs: Sequence[dict[str, Any]], md_dir: Path, fig_dir: Path) -> str:
    agg, rel, depths, seeds, minutes = _section(runs, md_dir, fig_dir, "rl")
    r0 = runs[0]
    rec = r0["recipe"]
    lines = [
        f"## RL: SimBa agents with SAC on {r0['dataset']}",
        "",
        f"{len(runs)} runs: {', '.join(map(str, depths))} SimBa blocks × {{residual, plain}} × seeds {', '.join(map(str, seeds))}; "
        f"model: {rec['model']}; {rec['algorithm']}. One recipe for every run: {rec['timesteps']:,} environment steps "
        f"(the `sac-pendulum-resmlp` preset, {rec['timesteps']:,} instead of its 20,000 steps). Training return: "
        f"{rec['train_metric']}; test return: {rec['test_metric']}. Diagnostics on {rec['diagnostics']}; lesions on the "
        f"actor, scored over {rec['lesion_episodes']} deterministic episodes. Device: {r0['device']}; {minutes:.1f} min "
        "for the whole sweep (wall time, shared machine). `scripts/residual_study.py rl`.",
        "",
        _missing(runs, "rl", "blocks"),
        "**Shortened compared with the anchor** (SimBa, Lee et al. 2024):",
        "",
        _table([["environment", f"{r0['dataset']} (3-d observation, 1-d action)", "DMC, MuJoCo, HumanoidBench (up to 151-d)"],
                ["networks", f"width {rec['width']}, {', '.join(map(str, depths))} blocks", "width 512 (critic) / 128 (actor), 1-8+ blocks"],
                ["training", f"{rec['timesteps']:,} steps", "up to 1M steps"],
                ["seeds", str(len(seeds)), "5-10"]], ["", "here", "SimBa"]),
        "",
        "### Verdicts",
        "",
        f"Computed from the numbers below by the rule next to each. Noise: the larger spread over seeds of the two twins, "
        f"at least {FLOORS['return']:g} return units ({FLOORS['lesion']:g} % for lesion drops).",
        "",
        *verdict_lines(rl_verdicts(agg)),
        "### Figures",
        "",
        *_figure_lines(rel, {"metric": "Test and training return against depth:",
                             "curves": "Training return (mean of the last 10 episodes), every run:",
                             "gradients": "Gradient norm of the critic's TD loss w.r.t. each block's input at initialisation, first seed:",
                             "lesion": "Lesions: mean return with k random actor blocks removed, mean over draws and seeds:",
                             "correlation": "Gradient correlation of the deterministic policy w.r.t. the observation:"}),
        "### Table",
        "",
        "Means ± standard deviations over seeds. Gradient ratio: log10 of the input-gradient norm at the first block over "
        "that at the last, at initialisation (critic: TD loss; actor: SAC loss). Lesion drop: mean share (%) of the "
        "above-random return lost when one actor block is removed. s / run: wall time on a shared machine.",
        "",
        _table(_rows(agg, depths, [("test return", lambda a: a["test"].fmt(1)), ("training return", lambda a: a["train"].fmt(1)),
                                   ("critic gradient ratio", lambda a: a["flow_a"].fmt()),
                                   ("actor gradient ratio", lambda a: a["flow_b"].fmt()),
                                   ("lesion drop", lambda a: a["lesion_drop"].fmt()),
                                   ("grad. corr.", lambda a: a["grad_corr_end"].fmt(3))]),
               ["blocks", "twin", "params", "test return", "training return", "critic gradient ratio", "actor gradient ratio",
                "lesion drop", "grad. corr.", "s / run"]),
        "",
    ]
    return "\n".join(lines)


def gan_section(runs: Sequence[dict[str, Any]], md_dir: Path, fig_dir: Path) -> str:
    agg, rel, depths, seeds, minutes = _section(runs, md_dir, fig_dir, "gan")
    r0 = runs[0]
    rec, final = r0["recipe"], r0["final"]
    lines = [
        "## GAN: SNGAN on MNIST, deeper generators and discriminators",
        "",
        f"{len(runs)} runs: {', '.join(map(str, depths))} blocks per stage (generator 2 × n blocks, discriminator 4 × n) × "
        f"{{residual, plain}} × seeds {', '.join(map(str, seeds))}; model: {rec['model']}. One recipe for every run: "
        f"{_plural(rec['iters'], 'iteration')} of batch {rec['batch']} (the published `sngan-mnist` trains 10,000), "
        f"{rec['loss']}, {rec['optimizer']}; measured on {rec['measured_on']} with {rec['features']}: FD of "
        f"{rec['fd_samples']:,} samples to {rec['fd_samples']:,} test and {rec['fd_samples']:,} training images (real "
        f"training vs test images: {final['fd_real_train_vs_test']:.3f}), class accuracy of "
        f"{10 * rec['accuracy_per_class']:,} samples. Device: {r0['device']}; {minutes:.1f} min for the whole sweep "
        "(wall time, shared machine). `scripts/residual_study.py gan`.",
        "",
        _missing(runs, "gan", "blocks per stage"),
        "**Shortened compared with the anchor** (Miyato et al. 2018):",
        "",
        _table([["data", "MNIST 28×28, class-conditional", "CIFAR-10 / STL-10 / ImageNet"],
                ["networks", f"ch {rec['ch']}, {', '.join(map(str, depths))} blocks per stage", "standard CNN vs ResNet (ch 128-1024)"],
                ["training", f"{rec['iters']:,} iterations of batch {rec['batch']}", "50k-450k generator updates of batch 64"],
                ["measure", "FD and class accuracy with resnet-mnist", "Inception score and FID (Inception network)"],
                ["seeds", str(len(seeds)), "several (mean ± std)"]], ["", "here", "Miyato et al. 2018"]),
        "",
        "### Verdicts",
        "",
        f"Computed from the numbers below by the rule next to each. Noise: the larger spread over seeds of the two twins, "
        f"at least {FLOORS['fd']:g} in FD ({FLOORS['lesion']:g} % for lesion drops).",
        "",
        *verdict_lines(gan_verdicts(agg)),
        "### Figures",
        "",
        *_figure_lines(rel, {"metric": "FD to the test set and class accuracy against depth:",
                             "curves": "Generator loss, every run:",
                             "gradients": "Gradient norm of the generator's hinge loss w.r.t. each block's input at initialisation, first seed:",
                             "lesion": "Lesions: class accuracy with k random generator blocks removed (blocks that keep their shape):",
                             "correlation": "Gradient correlation of the generator w.r.t. its noise:"}),
        "### Table",
        "",
        "Means ± standard deviations over seeds. FD gap: FD to the test set − FD to the training set. Gradient ratio: log10 "
        "of the input-gradient norm at the first block over that at the last, at initialisation (hinge losses). Lesion "
        "drop: mean share (%) of the above-chance class accuracy lost when one generator block is removed. s / run: wall "
        "time on a shared machine.",
        "",
        _table(_rows(agg, depths, [("FD test", lambda a: a["test"].fmt(3)), ("FD gap", lambda a: a["gap"].fmt(3)),
                                   ("class acc. %", lambda a: a["acc"].fmt(1)),
                                   ("G gradient ratio", lambda a: a["flow_a"].fmt()),
                                   ("D gradient ratio", lambda a: a["flow_b"].fmt()),
                                   ("lesion drop", lambda a: a["lesion_drop"].fmt()),
                                   ("grad. corr.", lambda a: a["grad_corr_end"].fmt(3))]),
               ["blocks per stage", "twin", "G params", "FD test", "FD gap", "class acc. %", "G gradient ratio",
                "D gradient ratio", "lesion drop", "grad. corr.", "s / run"]),
        "",
    ]
    return "\n".join(lines)
