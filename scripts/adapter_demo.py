"""What the adapter demonstrations (a base fine-tuned to a new task as a LoRA adapter, against other
ways of training it, at several training-set sizes) share: the seeded stratified subsets, the step
budget, one ``reszoo.finetune`` run's record, and the results' table, plot and generated section of
docs/finetune.md. Each demo (``scripts/finetune_demo_lora_*.py``) brings its data, its methods and
its section's prose; the numbers in the docs come only from its results JSON."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "finetune.md"
RESULTS_DIR = ROOT / "results" / "finetune-demo"


@dataclass(frozen=True)
class Demo:
    """One demonstration's names: where its results, plot and docs section go and how they read."""

    script: str              # "scripts/finetune_demo_lora_fashion.py"
    base: str                # the registry entry fine-tuned
    labels: dict[str, str]   # method -> its name in the table and plot, in table order
    unit: str                # what a training example is called: "images", "queries", "recordings"
    results: str             # results JSON file name (under results/finetune-demo/)
    plot: str                # PNG file name (under the results folder and docs/img/)
    section: str             # the docs heading, "### ..."
    title: str               # the plot's title
    xlabel: str              # the plot's x axis
    before: str              # the docs heading the section goes before when it is not there yet

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.labels)


# The methods' names in every demonstration's table and plot; only the LoRA one (its rank) is a demo's own.
METHOD_LABELS = {"full": "full fine-tune", "probe": "linear probe (head only)", "scratch": "from scratch"}


def method_labels(lora: str, methods: tuple[str, ...]) -> dict[str, str]:
    """``Demo.labels``: ``lora`` for ``"lora"``, :data:`METHOD_LABELS` for the others, in ``methods``' order."""
    return {m: lora if m == "lora" else METHOD_LABELS[m] for m in methods}


def stratified_subset(labels: Any, size: int, seed: int) -> Any:
    """Indices of ``size`` examples, ``size / classes`` seeded picks per class, sorted."""
    import numpy as np

    labels = np.asarray(labels)
    classes = np.unique(labels)
    if size % len(classes):
        raise SystemExit(f"--sizes: {size} is not a multiple of the {len(classes)} classes (the subsets are stratified)")
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(labels == c), size // len(classes), replace=False) for c in classes]
    return np.sort(np.concatenate(picks))


def epochs_for(size: int, epochs: int, min_steps: int, batch_size: int) -> int:
    """``epochs``, or more where that many epochs of ``size`` examples are fewer than ``min_steps`` steps."""
    return max(epochs, math.ceil(min_steps / math.ceil(size / batch_size)))


def finetune_run(base: str, method: str, train: Any, test: Any, options: dict[str, Any], *, seed: int,
                 **common: Any) -> dict[str, Any]:
    """One ``reszoo.finetune`` run of ``base`` (on the CPU, float32, no validation split, nothing written)
    and its record: sizes, steps, test scores, trainable and total parameters, wall time."""
    import reszoo

    start = time.perf_counter()
    result = reszoo.finetune(base, train, test_data=test, val_split=0.0, seed=seed, cpu=True, mixed_precision="no",
                             progress=False, **common, **options)
    wall = time.perf_counter() - start
    params = list(result.model.parameters())
    m = result.metrics
    return {
        "method": method, "num_train": m["num_train"], "num_test": m["num_test"],
        "epochs": m["epochs_run"], "steps": m["global_steps"],
        "test_accuracy": m["test_accuracy"], "test_macro_f1": m["test_macro_f1"],
        "trainable_params": sum(p.numel() for p in params if p.requires_grad),
        "total_params": sum(p.numel() for p in params),
        "train_seconds": m["train_seconds"], "wall_seconds": round(wall, 1),
    }


def machine() -> dict[str, Any]:
    import torch

    return {"threads": torch.get_num_threads(), "torch": torch.__version__,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)"}


def plot(demo: Demo, results: dict[str, Any], path: Path) -> None:
    """Test accuracy against training-set size, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for method in demo.methods:
        runs = sorted((r for r in results["runs"] if r["method"] == method), key=lambda r: r["num_train"])
        if runs:
            ax.plot([r["num_train"] for r in runs], [100 * r["test_accuracy"] for r in runs], marker="o",
                    label=demo.labels[method])
    ax.set_xscale("log")
    ax.set_xlabel(demo.xlabel)
    ax.set_ylabel(f"test accuracy (%, {results['num_test']:,} {demo.unit})")
    ax.set_title(demo.title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def table(demo: Demo, results: dict[str, Any]) -> str:
    lines = [f"| train {demo.unit} | method | epochs (steps) | trainable params | test acc | wall time |",
             "|---|---|---|---|---|---|"]
    for r in sorted(results["runs"], key=lambda r: (r["num_train"], demo.methods.index(r["method"]))):
        share = f" ({100 * r['trainable_params'] / r['total_params']:.1f}%)"
        lines.append(f"| {r['num_train']:,} | {demo.labels[r['method']]} | {r['epochs']} ({r['steps']}) | "
                     f"{r['trainable_params']:,}{share} | **{100 * r['test_accuracy']:.2f}%** | {r['wall_seconds']:.0f} s |")
    return "\n".join(lines)


def gaps(demo: Demo, results: dict[str, Any], reference: str) -> str:
    """One line per size: the full fine-tune and LoRA against ``reference`` (and each other), in points."""
    acc = {(r["num_train"], r["method"]): 100 * r["test_accuracy"] for r in results["runs"]}
    ref = demo.labels[reference]
    lines = []
    for size in sorted({n for n, _ in acc}):
        if all((size, m) in acc for m in ("lora", "full", reference)):
            lines.append(f"- {size:,} {demo.unit}: full fine-tune {acc[size, 'full'] - acc[size, reference]:+.2f} points over "
                         f"{ref}, LoRA {acc[size, 'lora'] - acc[size, reference]:+.2f} "
                         f"({acc[size, 'lora'] - acc[size, 'full']:+.2f} against the full fine-tune).")
    return "\n".join(lines)


def accuracies(results: dict[str, Any]) -> dict[tuple[int, str], float]:
    """(size, method) -> test accuracy in percent."""
    return {(r["num_train"], r["method"]): 100 * r["test_accuracy"] for r in results["runs"]}


def best_line(demo: Demo, results: dict[str, Any]) -> str:
    """Which method scored best at each size."""
    acc = accuracies(results)
    parts = []
    for size in sorted({n for n, _ in acc}):
        top = max((m for m in demo.methods if (size, m) in acc), key=lambda m: acc[size, m])
        parts.append(f"{size:,} {demo.unit}: {demo.labels[top].split(' (')[0]} ({acc[size, top]:.2f}%)")
    return "Best at each size: " + "; ".join(parts) + "."


def gap_line(demo: Demo, results: dict[str, Any], method: str, against: str) -> str:
    """How far ``method`` ends from ``against`` over the sizes, and where closest ("" without both)."""
    acc = accuracies(results)
    gap = {n: acc[n, method] - acc[n, against] for n, m in acc if m == method and (n, against) in acc}
    if not gap:
        return ""
    closest = min(gap, key=lambda n: abs(gap[n]))
    name = demo.labels[method].split(" (")[0]
    low, high = min(gap.values()), max(gap.values())
    span = f"{low:+.2f}" if f"{low:+.2f}" == f"{high:+.2f}" else f"{low:+.2f} to {high:+.2f}"
    return (f"{name[0].upper()}{name[1:]} ends {span} points from the {demo.labels[against].split(' (')[0]}"
            + (f", closest at {closest:,} {demo.unit}." if len(gap) > 1 else "."))


def missing_line(demo: Demo, results: dict[str, Any]) -> str:
    """The runs of the grid that the results file lacks (a grid stopped early; ``--resume`` makes them), or ""."""
    done = {(r["num_train"], r["method"]) for r in results["runs"]}
    methods = [m for m in demo.methods if any(r["method"] == m for r in results["runs"])]
    missing = [f"{demo.labels[m].split(' (')[0]} at {n:,}" for n in results["sizes"] for m in methods if (n, m) not in done]
    return f"\n\nNot run yet (the grid was stopped; `--resume` completes it): {', '.join(missing)}." if missing else ""


def generated_note(demo: Demo) -> str:
    return (f"<!-- generated by `python {demo.script} --write-docs` from results/finetune-demo/{demo.results}; "
            "do not edit by hand -->")


def write_docs(demo: Demo, section: str, docs: Path = DOCS) -> None:
    """Put ``section`` (starting with ``demo.section``) in ``docs``, replacing a previous one, else before ``demo.before``."""
    text = docs.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(demo.section) + r"\n.*?(?=\n### |\n## )", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section.rstrip("\n") + "\n", text, count=1)
    else:
        if demo.before not in text:
            raise SystemExit(f"{docs}: no {demo.before!r} heading to put the section before")
        text = text.replace(demo.before, section + "\n" + demo.before, 1)
    docs.write_text(text, encoding="utf-8")


def run_grid(demo: Demo, out: Path, settings: dict[str, Any], sizes: list[int], methods: list[str],
             one: Callable[[int, str], dict[str, Any]], *, resume: bool = False) -> dict[str, Any]:
    """``settings`` plus ``runs``: ``one(size, method)``'s record for each size and method, in that order,
    the results JSON rewritten after each run (a long grid on a shared CPU keeps what it has done).
    ``resume``: keep the runs of an earlier results file made with the same settings, run the rest."""
    path = out / demo.results
    results = {**settings, "runs": []}
    if resume and path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        differ = sorted(k for k in {*settings, *previous} - {"runs"} if previous.get(k) != settings.get(k))
        if differ:
            raise SystemExit(f"--resume: {path} was made with other settings ({', '.join(differ)}); run without --resume")
        results["runs"] = [r for r in previous["runs"] if r["num_train"] in sizes and r["method"] in methods]
    done = {(r["num_train"], r["method"]) for r in results["runs"]}
    out.mkdir(parents=True, exist_ok=True)
    for size in sizes:
        for method in methods:
            if (size, method) in done:
                print(f"{size:>6,} {method:<8} kept from {path}", flush=True)
                continue
            record = one(size, method)
            results["runs"].append(record)
            results["runs"].sort(key=lambda r: (sizes.index(r["num_train"]), methods.index(r["method"])))
            path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
            print(f"{size:>6,} {method:<8} {record['epochs']:>3} epochs: test acc {100 * record['test_accuracy']:.2f}%, "
                  f"{record['trainable_params']:,} trainable, {record['wall_seconds']:.1f} s", flush=True)
    return results


def save(demo: Demo, results: dict[str, Any], out: Path) -> Path:
    """The results JSON and the plot into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / demo.results
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    plot(demo, results, out / demo.plot)
    return path


def publish(demo: Demo, section: Any, out: Path) -> None:
    """``--write-docs``: no training; the plot into docs/img/ and ``section(results)`` into docs/finetune.md,
    from ``out``'s results JSON."""
    results = json.loads((out / demo.results).read_text(encoding="utf-8"))
    docs_plot = ROOT / "docs" / "img" / demo.plot
    plot(demo, results, docs_plot)
    write_docs(demo, section(results))
    print(f"wrote {docs_plot.relative_to(ROOT)} and the section {demo.section[4:]!r} of {DOCS.relative_to(ROOT)}")


def add_run_args(p: argparse.ArgumentParser, demo: Demo, *, out: Path = RESULTS_DIR) -> None:
    """The options every demonstration takes: its step floor, seed, threads, resuming, output and ``--write-docs``."""
    p.add_argument("--min-steps", type=int, default=100, help="raise epochs for small sets to at least this many steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--resume", action="store_true", help="keep the runs of OUT's results made with the same settings")
    p.add_argument("--out", type=Path, default=out, help=f"where {demo.results} and {demo.plot} go")
    p.add_argument("--write-docs", action="store_true",
                   help=f"no training: the table from OUT/{demo.results} into docs/finetune.md, the plot into docs/img/")


def main(args: argparse.Namespace, demo: Demo, section: Callable[[dict[str, Any]], str],
         run_all: Callable[[argparse.Namespace], dict[str, Any]], table: Callable[[dict[str, Any]], str]) -> int:
    """A demonstration's command: ``--write-docs`` publishes the saved results; otherwise run the grid and save it."""
    if args.write_docs:
        publish(demo, section, args.out)
        return 0
    results = run_all(args)
    results_file = save(demo, results, args.out)
    print(table(results))
    print(f"wrote {results_file} and {args.out / demo.plot}")
    return 0
