"""``reszoo analyze NAME [NAME ...] [--data PATH] --out DIR``: the residual diagnostics of models,
as ``analysis.json`` and PNG plots (several models share each plot, e.g. a model and its plain twin)."""

from __future__ import annotations

import argparse
from typing import Any

from .core import AnalysisError

DATA_HELP = ("image classifiers: an MNIST-style .npz (x_test/y_test uint8), a folder with one subfolder per class, "
             "or a folder of <name>_<label>.png files; omitted: uniform-noise images, scored against the intact "
             "model's own predictions. Other classifiers: their domain's fine-tuning data, e.g. a CSV/TSV/JSONL table "
             "of texts and labels (--column, --label-column) or a folder of audio files in one subfolder per class. "
             "Agents: an .npz of observations (omitted: the agent's own episodes in its environment); generators "
             "draw their own noise")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "analyze", help="gradient flow, branch/shortcut ratio, lesion study and gradient correlation of a model",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("names", nargs="+", metavar="NAME", help="registry name, hf://owner/repo[@rev] or saved-model folder")
    p.add_argument("--data", default=None, help=DATA_HELP)
    p.add_argument("--column", default=None, help="table data: the column of inputs (default: the domain's, e.g. text)")
    p.add_argument("--label-column", default=None, help="table data: the column of labels (default: the domain's, e.g. label)")
    p.add_argument("--out", required=True, help="folder for analysis.json and the plots")
    p.add_argument("--limit", type=int, default=512, help="use at most this many samples (a seeded random subset; default 512)")
    p.add_argument("--trials", type=int, default=5, help="random draws per number of removed blocks (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default=None)
    p.add_argument("--mirror", default=None, help="mirror folder (default $RESZOO_MIRROR)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..api import load
    from ..nn import residual_blocks
    from .data import analysis_data
    from .suite import analyze, write_json, write_plots

    if args.limit < 1:
        raise AnalysisError(f"--limit must be >= 1, got {args.limit}")
    out = Path(args.out)
    results: dict[str, Any] = {}
    report: dict[str, Any] = {"models": {}}
    for name in args.names:
        model = load(name, device=args.device, mirror=args.mirror)
        try:
            data = analysis_data(model, model.entry.domain, args.data, limit=args.limit, seed=args.seed,
                                 text_column=args.column, label_column=args.label_column)
        except AnalysisError as err:
            if str(err).startswith("--data"):  # names the data already
                raise
            raise AnalysisError(f"{name} ({model.entry.domain} domain): {err}") from None
        metric_name = data.metric_name or ("accuracy (%)" if data.labelled else "agreement with the intact model (%)")
        scored = data.module or model
        options = {"metric": data.metric} if data.metric is not None else {}
        r = analyze(scored, data.inputs, data.targets, metric_name=metric_name, trials=args.trials, seed=args.seed,
                    batch_size=args.batch_size, loss_fn=data.loss_fn, **options)
        results[name] = r
        residual = any(b.residual for b in residual_blocks(scored))
        report["models"][name] = {"residual": residual, "data": data.describe(), **r}
        lesion, flow = r["lesion"], r["gradient_flow"]
        drops = lesion.single_drops()
        print(f"{name}: {metric_name} {lesion.baseline:.2f} on {data.samples} samples; "
              f"{lesion.removable}/{len(lesion.blocks)} blocks removable"
              + (f", mean drop when one is removed {sum(drops) / len(drops):.2f}" if drops else "")
              + f"; gradient at the first block vs the last: {flow.attenuation:+.2f} (log10)")
    paths = [write_json(report, out / "analysis.json"), *write_plots(results, out)]
    for path in paths:
        print(f"wrote {path}")
    return 0
