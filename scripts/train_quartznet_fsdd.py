"""Train reszoo's small QuartzNet CTC recogniser on connected spoken digits made from FSDD, residual
and plain twins, leave-one-speaker-out, on reszoo's one training loop (``reszoo.finetune`` from
scratch on NeMo-style manifests, the same path as ``reszoo finetune --data train.jsonl``).

    python -m scripts.train_quartznet_fsdd --folds george --epochs 1 --limit 200   # smoke run: nothing published
    python -m scripts.train_quartznet_fsdd --folds george                   # the published pair (george held out)
    python -m scripts.train_quartznet_fsdd --folds jackson,lucas             # more leave-one-speaker-out folds
    python -m scripts.train_quartznet_fsdd --register-from runs/train_quartznet_fsdd   # publish what ran
    python -m scripts.train_quartznet_fsdd --folds george --register        # train here and publish at once

Data (``scripts/connected_digits.py``, seed 0, built once into ``--cache``): per speaker,
``TRAIN_PER_SPEAKER`` utterances of 1-7 digits from the train takes (5-49) and
``TEST_PER_SPEAKER`` from the test takes (0-4). A fold holds one speaker out: it trains on the
other five speakers' train utterances and is measured on those five speakers' test utterances
(seen speakers, new recordings) and on the held-out speaker's test utterances (an unseen voice).
The published model is fold ``george`` (the first speaker alphabetically, as
tdnn-fsdd-digits' held-out speaker).

The recipe (both twins alike): ``quartznet_small`` from random init, CTC over the 16 characters
of the digit words, AdamW lr 3e-3 weight decay 1e-3 (not on biases/norms), one-cycle schedule
(15 % warm-up), ``EPOCHS`` (10) epochs of batches of 16 utterances grouped by length, no
augmentation, bf16 autocast where the CPU has bf16 instructions (else float32), seed 0, one CPU
thread. ``--augment`` adds NeMo's SpecAugment (``SpectrogramAugmentation``: 2 frequency masks of up
to 15 mel bins, 2 time masks of up to 5 % of the frames): measured on all six folds at 16 epochs
(``results/quartznet-fsdd-specaugment/``), it did not beat the recipe (leave-one-speaker-out mean
33.8 % against 30.6 %, seen speakers 4.7 % against 4.5 %) and left the plain twin far behind, so it
stays an option. Evaluation: ``model.transcribe`` on the weights as ``reszoo.load`` builds them, WER
and CER with jiwer, with two decoders: greedy, and the best path through the ten digit words
(``reszoo.speech.lexicon``: the task's grammar, as TIDIGITS recognisers decode; the published entries
carry it as ``runtime.lexicon``, so it is what ``transcribe`` and ``reszoo predict`` use).
``--reevaluate`` measures saved runs again (after a change to decoding or evaluation) without
training them.

Each run writes ``OUT/<fold>/<variant>/results.json`` (metrics, the loss per logged step and per
epoch, wall time, seed) and ``model.safetensors``, and a copy of the results under
``results/quartznet-fsdd/``. Only ``--register`` or ``--register-from`` copies the george fold's
weights into ``weights/``, writes the numbers into ``registry.yaml`` (leave-one-speaker-out: the
mean over the folds done for both twins, and each), the numbers section of docs/speech.md, and
regenerates the cards. A smoke run (``--limit``, ``--augment``, other ``--epochs``) is refused by both.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = "scripts/train_quartznet_fsdd.py"
NAME = "quartznet-fsdd-digits"
DATASET = "free-spoken-digit-dataset"
DEFAULT_OUT = ROOT / "runs" / "train_quartznet_fsdd"
DEFAULT_CACHE = ROOT / "runs" / "connected_digits"
RESULTS_DIR = ROOT / "results" / "quartznet-fsdd"
DOC = ROOT / "docs" / "speech.md"
RESULTS = "results.json"
WEIGHTS = "model.safetensors"
MAIN_FOLD = "george"
VARIANTS = {"residual": True, "plain": False}
TRAIN_PER_SPEAKER = 600
TEST_PER_SPEAKER = 200
DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
DECODERS = {"greedy": False, "lexicon": DIGIT_WORDS}  # transcribe(lexicon=...); results key suffix "" / "_lexicon"
EPOCHS = 10  # the recipe's: about 1,900 optimizer steps (CTC needed more than 600 to leave its all-blank plateau here)
RECIPE: dict[str, Any] = dict(
    pretrained=False, batch_size=16, optimizer="adamw", lr=3e-3, weight_decay=1e-3, schedule="onecycle", warmup=0.15,
    group_by_length=8, val_split=0.0, cpu=True, progress=False, script=SCRIPT, log_every=10, keep_checkpoints=1,
)
# --augment: NeMo's SpecAugment on the training spectrograms (an option, not the recipe: see above).
AUGMENT = dict(freq_masks=2, freq_width=15, time_masks=2, time_width=0.05)
DOC_BEGIN = "<!-- numbers: scripts/train_quartznet_fsdd.py (generated; do not edit) -->"
DOC_END = "<!-- end of numbers: scripts/train_quartznet_fsdd.py -->"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def model_name(variant: str) -> str:
    return NAME + ("" if VARIANTS[variant] else "-plain")


# --------------------------------------------------------------------------- data


def build_data(cache: Path, data: Path | None, seed: int) -> dict[tuple[str, str], Path]:
    """Every speaker's train and test manifests (built once; the same seed rebuilds the same files)."""
    from scripts.connected_digits import build

    stamp = cache / "built.json"
    want = {"train": TRAIN_PER_SPEAKER, "test": TEST_PER_SPEAKER, "seed": seed}
    if not (stamp.is_file() and json.loads(stamp.read_text()) == want):
        log(f"building connected-digit utterances into {cache} ({TRAIN_PER_SPEAKER} train + {TEST_PER_SPEAKER} test per speaker)")
        try:
            build(cache, train=TRAIN_PER_SPEAKER, test=TEST_PER_SPEAKER, seed=seed, data=data)
        except FileNotFoundError as err:
            raise SystemExit(str(err)) from None
        stamp.write_text(json.dumps(want))
    from scripts.data import FSDD_SPEAKERS

    return {(split, s): cache / f"{split}-{s}.jsonl" for split in ("train", "test") for s in FSDD_SPEAKERS}


def read_manifest(path: Path) -> list[dict[str, Any]]:
    """A manifest's records, with ``audio_filepath`` made absolute."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            r["audio_filepath"] = str((path.parent / r["audio_filepath"]).resolve())
            out.append(r)
    return out


def write_manifest(records: list[dict[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def subset(records: list[dict[str, Any]], limit: int | None, seed: int) -> list[dict[str, Any]]:
    if not limit or limit >= len(records):
        return records
    import numpy as np

    keep = sorted(np.random.default_rng(seed).permutation(len(records))[:limit].tolist())
    return [records[i] for i in keep]


# --------------------------------------------------------------------------- one run


def evaluate(model: Any, records: list[dict[str, Any]], lexicon: list[str] | bool = False) -> dict[str, Any]:
    """Transcripts of ``records`` (greedy, or through ``lexicon``) and their WER/CER (fractions) with the counts."""
    from reszoo.speech.ctc import error_rates, transcribe

    hyps = transcribe(model, [r["audio_filepath"] for r in records], batch_size=32, lexicon=lexicon)
    rates = error_rates([r["text"] for r in records], hyps)
    return {**{k: rates[k] for k in ("wer", "cer", "word_errors", "words", "char_errors", "chars")},
            "utterances": len(records)}


def measure(model: Any, manifests: dict[tuple[str, str], Path], fold: str) -> dict[str, Any]:
    """WER/CER per speaker and over the seen speakers, for each decoder (the lexicon's keys end in ``_lexicon``)."""
    from scripts.data import FSDD_SPEAKERS

    seen = [s for s in FSDD_SPEAKERS if s != fold]
    out: dict[str, Any] = {"seen_speakers": seen, "heldout_speaker": fold, "lexicon": DIGIT_WORDS}
    per_speaker: dict[str, dict[str, Any]] = {}
    for decoder, lexicon in DECODERS.items():
        suffix = "" if decoder == "greedy" else f"_{decoder}"
        rates = {s: evaluate(model, read_manifest(manifests["test", s]), lexicon) for s in FSDD_SPEAKERS}
        for s, r in rates.items():
            if decoder == "greedy":
                per_speaker[s] = r
            else:
                per_speaker[s][decoder] = r
        counts = {k: sum(rates[s][k] for s in seen) for k in ("word_errors", "words", "char_errors", "chars")}
        out |= {f"seen_wer{suffix}": counts["word_errors"] / counts["words"],
                f"seen_cer{suffix}": counts["char_errors"] / counts["chars"],
                f"unseen_wer{suffix}": rates[fold]["wer"], f"unseen_cer{suffix}": rates[fold]["cer"]}
    return out | {"per_speaker": per_speaker}


def save_results(folder: Path, results: dict[str, Any]) -> None:
    """A run's ``results.json``, and (not a smoke run) its copy under ``results/quartznet-fsdd/``."""
    text = json.dumps(results, indent=1) + "\n"
    (folder / RESULTS).write_text(text, encoding="utf-8")
    if not results["smoke"]:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        (RESULTS_DIR / f"{results['fold']}-{results['variant']}.json").write_text(text, encoding="utf-8")


def reevaluate(args: argparse.Namespace, manifests: dict[tuple[str, str], Path]) -> None:
    """Measure the saved runs of ``--folds`` x ``--variants`` again from their weights (no training)."""
    import reszoo
    from reszoo.hub import sha256_of
    from safetensors.torch import load_file

    for fold in args.folds:
        for variant in args.variants.split(","):
            folder = args.out / fold / variant
            if not (folder / RESULTS).is_file():
                log(f"{folder}: no run to measure again")
                continue
            results = json.loads((folder / RESULTS).read_text(encoding="utf-8"))
            if sha256_of(folder / results["weights_file"]) != results["sha256"]:
                raise SystemExit(f"{folder / results['weights_file']}: its sha256 differs from {RESULTS}")
            model = reszoo.load(results["name"], pretrained=False)
            model.load_state_dict(load_file(folder / results["weights_file"]))
            model.eval()
            results |= measure(model, manifests, fold)
            save_results(folder, results)
            log(f"fold {fold} / {variant} measured again: seen WER {100 * results['seen_wer']:.2f}% greedy, "
                f"{100 * results['seen_wer_lexicon']:.2f}% lexicon; unseen {100 * results['unseen_wer']:.2f}% / "
                f"{100 * results['unseen_wer_lexicon']:.2f}%")


def step_losses(run_dir: Path) -> list[dict[str, Any]]:
    """The loop's logged training loss per ``log_every`` steps (metrics.jsonl of the run folder)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [{"step": r["step"], "loss": round(r["loss"], 4)} for r in rows if r.get("event") == "step"]


def settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"epochs": args.epochs, "seed": args.seed, "limit": args.limit, "train_per_speaker": TRAIN_PER_SPEAKER,
            "test_per_speaker": TEST_PER_SPEAKER, "augment": AUGMENT if args.augment else None}


def run_one(fold: str, variant: str, manifests: dict[tuple[str, str], Path], args: argparse.Namespace) -> dict[str, Any] | None:
    import torch

    import reszoo
    from reszoo.finetune.loop import bf16_supported
    from reszoo.speech.training import SpectrogramAugmentation
    from scripts.data import FSDD_SPEAKERS
    from scripts.registry_io import COMMIT_LIMIT, write_weights
    from scripts.train_resnet_mnist import hardware

    folder = args.out / fold / variant
    if (folder / RESULTS).is_file() and not args.force:
        done = json.loads((folder / RESULTS).read_text(encoding="utf-8"))
        if {k: done.get(k) for k in settings(args)} == settings(args):
            log(f"{folder / RESULTS} exists with these settings; skipping (--force to redo)")
            return done
    seen = [s for s in FSDD_SPEAKERS if s != fold]
    train = subset([r for s in seen for r in read_manifest(manifests["train", s])], args.limit, args.seed)
    train_manifest = write_manifest(train, folder / "train.jsonl")
    precision = "bf16" if bf16_supported("cpu") else "no"
    name = model_name(variant)
    log(f"fold {fold} / {variant} ({name}): {len(train)} training utterances of {', '.join(seen)}; "
        f"{args.epochs} epochs, {precision}")
    start = time.perf_counter()
    augment = SpectrogramAugmentation(**AUGMENT) if args.augment else None
    result = reszoo.finetune(name, str(train_manifest), epochs=args.epochs, seed=args.seed, mixed_precision=precision,
                             out=str(folder / "run"), overwrite=True, augment=augment, **RECIPE)
    seconds = time.perf_counter() - start
    state = {k: v.detach().contiguous() for k, v in result.model.state_dict().items()}
    model = reszoo.load(name, pretrained=False)  # the published model, holding these weights (strictly)
    model.load_state_dict(state)
    model.eval()
    results: dict[str, Any] = {
        "fold": fold, "variant": variant, "name": name, **settings(args),
        "smoke": bool(args.limit) or args.epochs != EPOCHS or args.augment,
        **measure(model, manifests, fold),
        "train_utterances": len(train), "params": sum(p.numel() for p in model.parameters()),
        "precision": precision, "train_seconds": round(seconds, 1),
        "wall_seconds": round(float(result.metrics.get("wall_seconds", seconds)), 1),
        "loss_per_epoch": [round(r["train_loss"], 4) for r in result.history],
        "loss_per_step": step_losses(folder / "run"),
        "training": training_text(args.epochs, args.seed, precision, args.augment),
        "train_hardware": hardware("cpu", precision, torch.get_num_threads()),
    }
    written = write_weights(state, folder / WEIGHTS, max_bytes=COMMIT_LIMIT)
    results |= {"weights_file": WEIGHTS, **written}
    shutil.rmtree(folder / "run" / "checkpoints", ignore_errors=True)  # resumable state, not needed afterwards
    save_results(folder, results)
    log(f"fold {fold} / {variant}: seen WER {100 * results['seen_wer']:.2f}% ({100 * results['seen_wer_lexicon']:.2f}% "
        f"with the digit lexicon), unseen ({fold}) WER {100 * results['unseen_wer']:.2f}% "
        f"({100 * results['unseen_wer_lexicon']:.2f}%); trained in {seconds:.0f} s")
    return results


def training_text(epochs: int, seed: int, precision: str, augment: bool = False) -> str:
    augmentation = (f"SpecAugment ({AUGMENT['freq_masks']} frequency masks of up to {AUGMENT['freq_width']} mel bins, "
                    f"{AUGMENT['time_masks']} time masks of up to {AUGMENT['time_width']:.0%} of the frames)" if augment
                    else "no augmentation")
    return (f"{epochs} epochs from random init, CTC over characters, batches of 16 utterances grouped by length, AdamW "
            f"lr 3e-3 weight decay 1e-3 (not on biases/norms), one-cycle schedule (15% warm-up), {augmentation}, "
            f"{'bf16 autocast' if precision == 'bf16' else 'float32'}, "
            f"seed {seed}; reszoo.finetune's loop on NeMo-style manifests")


# --------------------------------------------------------------------------- publishing


def pct(x: float) -> float:
    return round(100 * x, 2)


def checked_results(out: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """``{variant: {fold: results}}`` under ``out``; smoke runs, odd seeds or bad weights refused."""
    from reszoo.hub import sha256_of
    from scripts.registry_io import COMMIT_LIMIT

    found = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(out.glob(f"*/*/{RESULTS}"))]
    if not found:
        raise SystemExit(f"--register-from {out}: no {RESULTS} under {out}/<fold>/<variant>/")
    for r in found:
        where = out / r["fold"] / r["variant"]
        if r.get("smoke"):
            raise SystemExit(f"{where}: a smoke run (--limit, --augment, or epochs other than the recipe's); it cannot be registered")
        source = where / r["weights_file"]
        if not source.is_file() or sha256_of(source) != r["sha256"] or r["size"] > COMMIT_LIMIT:
            raise SystemExit(f"{source}: missing, or its sha256 or size differs from its {RESULTS} (or is over the commit limit)")
    stale = [f"{r['fold']}/{r['variant']}" for r in found if r.get("lexicon") != DIGIT_WORDS or "seen_wer_lexicon" not in r]
    if stale:
        raise SystemExit(f"{out}: runs measured before the lexicon decoder ({', '.join(stale)}): measure them again "
                         "with --reevaluate --folds all")
    recipes = {json.dumps({k: r.get(k) for k in ("seed", "epochs", "augment")}, sort_keys=True) for r in found}
    if len(recipes) > 1:
        raise SystemExit(f"{out}: runs with different seeds, epochs or augmentation; one recipe for all: redo the odd ones "
                         "(--force)")
    out_map: dict[str, dict[str, dict[str, Any]]] = {v: {} for v in VARIANTS}
    for r in found:
        out_map[r["variant"]][r["fold"]] = r
    if not all(MAIN_FOLD in out_map[v] for v in VARIANTS):
        raise SystemExit(f"{out}: the published fold ({MAIN_FOLD}) has not run for both twins")
    return out_map


def register_from(out: Path) -> None:
    from reszoo.cards import write_cards
    from scripts.registry_io import measured, read_entry, update_entry

    runs = checked_results(out)
    both = [f for f in runs["residual"] if f in runs["plain"]]
    loso = {v: {f: pct(runs[v][f]["unseen_wer"]) for f in both} for v in VARIANTS}
    means = {v: round(sum(loso[v].values()) / len(both), 2) for v in VARIANTS}
    loso_lex = {v: {f: pct(runs[v][f]["unseen_wer_lexicon"]) for f in both} for v in VARIANTS}
    means_lex = {v: round(sum(loso_lex[v].values()) / len(both), 2) for v in VARIANTS}
    folds_text = ", ".join(both)
    fields: dict[str, dict[str, Any]] = {}
    for variant in VARIANTS:
        r = runs[variant][MAIN_FOLD]
        seen = ", ".join(r["seen_speakers"])
        metrics = [
            measured(SCRIPT, DATASET, f"connected digits, test takes 0-4 of the 5 training speakers ({seen}; "
                     f"{5 * TEST_PER_SPEAKER} utterances, {sum(r['per_speaker'][s]['words'] for s in r['seen_speakers'])} words)",
                     "wer", 100 * r["seen_wer"], name="WER %, seen speakers, new recordings"),
            measured(SCRIPT, DATASET, f"connected digits of the held-out speaker {MAIN_FOLD} (test takes 0-4, "
                     f"{TEST_PER_SPEAKER} utterances)", "wer", 100 * r["unseen_wer"], name="WER %, unseen speaker"),
            measured(SCRIPT, DATASET, f"leave-one-speaker-out, mean over held-out speakers {folds_text} (each: train on the "
                     "other 5 speakers' takes 5-49, test on the held-out one's takes 0-4)", "wer", means[variant],
                     name="WER %, leave-one-speaker-out mean"),
            measured(SCRIPT, DATASET, "the same seen speakers' test utterances, decoded through the ten digit words "
                     "(runtime.lexicon; the default of transcribe and reszoo predict)", "wer", 100 * r["seen_wer_lexicon"],
                     name="WER %, seen speakers, new recordings, digit-lexicon decoding"),
            measured(SCRIPT, DATASET, f"the held-out speaker {MAIN_FOLD}'s test utterances, decoded through the ten digit "
                     "words", "wer", 100 * r["unseen_wer_lexicon"], name="WER %, unseen speaker, digit-lexicon decoding"),
            measured(SCRIPT, DATASET, f"leave-one-speaker-out mean over {folds_text}, decoded through the ten digit words",
                     "wer", means_lex[variant], name="WER %, leave-one-speaker-out mean, digit-lexicon decoding"),
        ]
        weights_src = out / MAIN_FOLD / variant / WEIGHTS
        dest = ROOT / "weights" / "reszoo" / model_name(variant) / WEIGHTS
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(weights_src, dest)
        weights = {"repo": f"reszoo/{model_name(variant)}", "file": WEIGHTS, "format": "safetensors", "sha256": r["sha256"],
                   "size": r["size"], "pin_note": "trained here; not yet pushed to huggingface.co, so no Hub commit exists"}
        extra = {"params": r["params"], "epochs": r["epochs"], "seed": r["seed"], "training": r["training"],
                 "train_hardware": r["train_hardware"], "train_seconds": round(r["train_seconds"]),
                 "split": f"train: {TRAIN_PER_SPEAKER} utterances per seen speaker from takes 5-49; test: "
                          f"{TEST_PER_SPEAKER} per speaker from takes 0-4; held out: {MAIN_FOLD}"}
        runtime = {"lexicon": DIGIT_WORDS}  # the decoder measured above travels with the weights
        if variant == "residual":
            extra["unseen_speaker_wer_percent_residual_vs_plain"] = {v: {"mean": means[v], **loso[v]} for v in VARIANTS}
            extra["seen_speakers_wer_percent_residual_vs_plain"] = {v: pct(runs[v][MAIN_FOLD]["seen_wer"]) for v in VARIANTS}
            extra["digit_lexicon_unseen_speaker_wer_percent_residual_vs_plain"] = {
                v: {"mean": means_lex[v], **loso_lex[v]} for v in VARIANTS}
            extra["digit_lexicon_seen_speakers_wer_percent_residual_vs_plain"] = {
                v: pct(runs[v][MAIN_FOLD]["seen_wer_lexicon"]) for v in VARIANTS}
            entry = read_entry(NAME)
            kept = [m for m in (entry.get("metrics") or []) if m.get("name") not in {m["name"] for m in metrics}]
            fields[NAME] = dict(weights=weights, metrics=kept + metrics, extra={**dict(entry.get("extra") or {}), **extra},
                                runtime=runtime)
        else:
            fields[model_name(variant)] = dict(weights=weights, metrics=metrics, extra=extra, runtime=runtime)
        log(f"{model_name(variant)}: weights {dest.relative_to(ROOT)}")
    # The twin first: an entry with weights needs a twin with weights of its own.
    for name in (model_name("plain"), NAME):
        update_entry(name, **fields[name])
    log(f"registry.yaml: {NAME} and its plain twin")
    write_doc(runs, both, means, means_lex)
    write_cards(ROOT / "model_cards")
    log(f"registered from {out} (folds done for both twins: {folds_text}); cards regenerated")


def write_doc(runs: dict[str, dict[str, dict[str, Any]]], both: list[str], means: dict[str, float],
              means_lex: dict[str, float]) -> None:
    """The measured numbers in docs/speech.md, between the markers (generated here only)."""
    r, p = runs["residual"][MAIN_FOLD], runs["plain"][MAIN_FOLD]
    lines = [DOC_BEGIN, "",
             f"Measured by `{SCRIPT}` ({r['training']}; {r['train_hardware']}; "
             f"{r['train_utterances']} training utterances, about {round(r['train_seconds'] / 60)} min per run).", "",
             "| | residual | plain twin |", "|---|---|---|",
             f"| WER %, seen speakers' new recordings (fold {MAIN_FOLD}) | {pct(r['seen_wer'])} | {pct(p['seen_wer'])} |",
             f"| CER %, same | {pct(r['seen_cer'])} | {pct(p['seen_cer'])} |"]
    for f in both:
        lines.append(f"| WER %, unseen speaker {f} | {pct(runs['residual'][f]['unseen_wer'])} | {pct(runs['plain'][f]['unseen_wer'])} |")
    lines += [f"| WER %, leave-one-speaker-out mean ({len(both)} fold{'s' if len(both) != 1 else ''}) | {means['residual']} | "
              f"{means['plain']} |",
              f"| **digit-lexicon decoding** (the default): WER %, seen speakers' new recordings | "
              f"{pct(r['seen_wer_lexicon'])} | {pct(p['seen_wer_lexicon'])} |",
              f"| digit-lexicon decoding: CER %, same | {pct(r['seen_cer_lexicon'])} | {pct(p['seen_cer_lexicon'])} |"]
    for f in both:
        lines.append(f"| digit-lexicon decoding: WER %, unseen speaker {f} | {pct(runs['residual'][f]['unseen_wer_lexicon'])} | "
                     f"{pct(runs['plain'][f]['unseen_wer_lexicon'])} |")
    lines += [f"| digit-lexicon decoding: WER %, leave-one-speaker-out mean | {means_lex['residual']} | {means_lex['plain']} |", "",
              "Rows without a decoder named are greedy decoding (`transcribe(..., lexicon=False)`); the digit lexicon "
              "restricts the transcript to the ten digit words (`reszoo.speech.lexicon`).", "",
              f"The published `{NAME}` (and `{NAME}-plain`) are the fold that holds out {MAIN_FOLD}. Every run's "
              "numbers, loss curve and time: `results/quartznet-fsdd/<fold>-<variant>.json`.", "", DOC_END]
    text = DOC.read_text(encoding="utf-8")
    if DOC_BEGIN in text:
        head, rest = text.split(DOC_BEGIN, 1)
        text = head + "\n".join(lines) + rest.split(DOC_END, 1)[1]
    else:
        raise SystemExit(f"{DOC}: no '{DOC_BEGIN}' marker for the numbers")
    DOC.write_text(text, encoding="utf-8")
    log(f"{DOC.relative_to(ROOT)}: numbers written")


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from scripts.data import FSDD_SPEAKERS

    p = argparse.ArgumentParser(prog="python -m scripts.train_quartznet_fsdd", description=__doc__.split("\n\n")[0])
    p.add_argument("--folds", default=MAIN_FOLD, help=f"held-out speakers to run, comma-separated, or 'all' (default {MAIN_FOLD})")
    p.add_argument("--variants", default="residual,plain")
    p.add_argument("--data", type=Path, default=None, help="FSDD folder holding recordings/ (default ../shared/data/fsdd)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--epochs", type=int, default=EPOCHS, help=f"default {EPOCHS} (the recipe's); others are a smoke run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="smoke run: a seeded N of the training utterances")
    p.add_argument("--augment", action="store_true", help="NeMo's SpecAugment on the training spectrograms (an "
                   "experiment: not the published recipe, so never registered)")
    p.add_argument("--force", action="store_true")
    p.add_argument("--threads", type=int, default=int(os.environ.get("RESZOO_THREADS", "1")))
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--register", action="store_true", help="after the runs, publish everything under --out")
    p.add_argument("--register-from", type=Path, default=None, metavar="DIR")
    p.add_argument("--reevaluate", action="store_true", help="measure the saved runs of --folds/--variants again from "
                   "their weights (no training): after a change to decoding or evaluation")
    args = p.parse_args(argv)
    args.folds = list(FSDD_SPEAKERS) if args.folds == "all" else [f for f in args.folds.split(",") if f]
    bad = [f for f in args.folds if f not in FSDD_SPEAKERS] + [v for v in args.variants.split(",") if v not in VARIANTS]
    if bad:
        p.error(f"unknown fold(s)/variant(s) {bad}; speakers: {', '.join(FSDD_SPEAKERS)}; variants: {', '.join(VARIANTS)}")
    if args.register and (args.limit or args.epochs != EPOCHS or args.augment):
        p.error("--register publishes the recipe's runs: not with --limit, --augment or other --epochs")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.register_from is not None:
        register_from(args.register_from)
        return 0
    import torch

    torch.set_num_threads(args.threads)
    manifests = build_data(args.cache, args.data, 0)
    if args.reevaluate:
        reevaluate(args, manifests)
        return 0
    for fold in args.folds:
        for variant in args.variants.split(","):
            run_one(fold, variant, manifests, args)
    if args.register:
        register_from(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
