"""Train reszoo's speech models on the Free Spoken Digit Dataset (FSDD), residual and plain twins,
on reszoo's one training loop (``reszoo.finetune`` from scratch, on in-memory features).

    python -m scripts.train_fsdd digits --epochs 1 --limit 200         # smoke run: nothing published
    nice -n 10 python -m scripts.train_fsdd digits            # tdnn-fsdd-digits (+ -plain), official split
    nice -n 10 python -m scripts.train_fsdd digits-heldout    # digit accuracy on an unseen speaker (george)
    nice -n 10 python -m scripts.train_fsdd speakers          # ecapa-fsdd-speakers (+ -plain), EER
    nice -n 10 python -m scripts.train_fsdd speakers-unseen   # EER on 2 speakers never seen (george, jackson)
    python -m scripts.train_fsdd --register-from runs/train_fsdd   # publish them (weights/, registry, cards)
    nice -n 10 python -m scripts.train_fsdd digits --register      # train here and publish at once

Data: ``$RESZOO_DATA/fsdd`` or ``../shared/data/fsdd`` (``recordings/{digit}_{speaker}_{index}.wav``,
8 kHz; official split: take index 0-4 test, 5-49 train), or ``--data DIR``. Features are computed
once with the models' own front end (the entries' ``preprocess``: 8 kHz -> 16 kHz, 80 log-mel,
sentence mean norm) and cached in ``--cache`` (default ``runs/fsdd/``), keyed by that front end
and the recordings.

The recipe (both twins alike; ``--variants residual,plain``): AdamW, lr 3e-3, weight decay 1e-3
(not on biases/norms: the loop's rule), one-cycle schedule rising over the first 15% of the steps,
batches of 32 recordings of similar length (sorted within shuffled pools of 8 batches),
SpecAugment (a random crop to 85-100% of the frames, two frequency masks of up to 10 bins, one
time mask of up to a tenth), seed 0, float32 on one CPU thread (``--threads``). Digits: 20 epochs,
cross-entropy with label smoothing 0.1. Speakers: 15 epochs, AAM-softmax (margin 0.2, scale 30)
on a cosine head that the loop builds for that criterion and that is dropped afterwards (the
published model outputs the embedding). Evaluation runs one recording at a time, unpadded, on
the weights as ``reszoo.load`` builds them: digit accuracy, or the equal error rate of cosine
scores over every pair (``reszoo.speech.training``), with the verification threshold taken at the
EER point of a dev split.

Each run writes ``OUT/<task>/<variant>[-<fold>]/results.json`` (and ``model.safetensors`` for
``digits`` and ``speakers``); nothing else. A run whose results are there with the same settings
is skipped (``--force`` redoes it). Only ``--register`` (after a run here) or ``--register-from
OUT`` copies the weights into ``weights/``, writes the numbers into ``registry.yaml`` (the
residual-vs-plain comparisons once both twins are done) and regenerates the cards. A smoke run
(``--limit N``, or epochs other than the recipe's) is marked as such and refused by both.
Held-out folds: ``--folds`` (speaker names for digits-heldout, default george, the first
alphabetically; a/b/c = george+jackson / lucas+nicolas / theo+yweweler for speakers-unseen,
default a); the registry metric is the mean over the folds done for both twins.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = "scripts/train_fsdd.py"
DEFAULT_OUT = ROOT / "runs" / "train_fsdd"
DEFAULT_CACHE = ROOT / "runs" / "fsdd"
DATASET = "free-spoken-digit-dataset"
RESULTS = "results.json"
WEIGHTS = "model.safetensors"

EPOCHS = {"digits": 20, "digits-heldout": 20, "speakers": 15, "speakers-unseen": 15}  # the recipe's
VARIANTS = {"residual": True, "plain": False}
MODELS = {"digits": "tdnn-fsdd-digits", "speakers": "ecapa-fsdd-speakers"}  # + "-plain" for the twin
UNSEEN_FOLDS = {"a": ("george", "jackson"), "b": ("lucas", "nicolas"), "c": ("theo", "yweweler")}
# The optimisation, on reszoo.finetune's options (the same for every task).
RECIPE: dict[str, Any] = dict(
    pretrained=False, batch_size=32, optimizer="adamw", lr=3e-3, weight_decay=1e-3, schedule="onecycle", warmup=0.15,
    group_by_length=8, val_split=0.0, mixed_precision="no", cpu=True, progress=False, script=SCRIPT,
)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def model_name(task: str, variant: str) -> str:
    """The registry entry a task's variant trains (held-out folds train the same architectures)."""
    base = MODELS["digits" if task.startswith("digits") else "speakers"]
    return base + ("" if VARIANTS[variant] else "-plain")


# --------------------------------------------------------------------------- data


def load_features(data: Path | None, cache_dir: Path) -> list[dict[str, Any]]:
    """Every recording's features ``(frames, 80)`` with its digit, speaker and take index; cached
    under ``cache_dir``, keyed by the models' front end and the recordings (names and sizes)."""
    import torch

    from reszoo.registry import info
    from reszoo.speech.preprocess import build_preprocess
    from scripts.data import fsdd_recordings

    try:
        recordings = fsdd_recordings(data)
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from None
    if not recordings:
        raise SystemExit(f"no .wav recordings in {recordings_dir(data)}")
    entries = [info(model_name(task, v)) for task in MODELS for v in VARIANTS]
    preprocess = dict(entries[0].preprocess)
    if any(dict(e.preprocess) != preprocess for e in entries):
        raise SystemExit("the FSDD entries' preprocess differ; one feature cache cannot serve them all")
    key = hashlib.sha256(json.dumps([preprocess, [(r["name"], r["path"].stat().st_size) for r in recordings]],
                                    sort_keys=True).encode()).hexdigest()[:12]
    cache = cache_dir / f"fbank-{key}.pt"
    if cache.is_file():
        saved = torch.load(cache, weights_only=True)
        log(f"features of {len(recordings)} recordings from {cache}")
    else:
        log(f"computing features of {len(recordings)} recordings (cached in {cache})")
        front_end = build_preprocess(entries[0])
        saved = {"names": [r["name"] for r in recordings], "feats": [front_end(r["path"]) for r in recordings]}
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(saved, cache)
    return [dict(name=r["name"], feats=f, digit=r["digit"], speaker=r["speaker"], index=r["index"])
            for r, f in zip(recordings, saved["feats"], strict=True)]


def recordings_dir(data: Path | None) -> Path:
    from scripts.data import data_root

    return (Path(data) if data is not None else data_root() / "fsdd") / "recordings"


def unpad(inputs: dict[str, Any]) -> dict[str, Any]:
    """A batch of padded rows -> the speech model's input, as ``SpeechAdapter.collate`` makes it
    from the same recordings: features cut to the batch's longest, relative ``lengths``."""
    import torch

    frames = inputs["frames"]
    longest = int(frames.max())
    lengths = (frames.double() / longest).to(torch.float32)  # as Python's division, rounded once
    return {"feats": inputs["feats"][:, :longest], "lengths": lengths}


def tensor_data(items: list[dict[str, Any]], targets: list[int], classes: list[str], name: str) -> Any:
    """The recordings' features padded into one tensor, with their lengths (for length-grouped
    batches and ``unpad``): ``reszoo.finetune``'s in-memory data."""
    import torch

    from reszoo.finetune.batches import TensorData

    frames = [int(it["feats"].shape[0]) for it in items]
    feats = torch.zeros(len(items), max(frames), items[0]["feats"].shape[1])
    for k, it in enumerate(items):
        feats[k, : frames[k]] = it["feats"]
    return TensorData({"feats": feats, "frames": torch.tensor(frames)}, targets, classes=classes, transform=unpad,
                      name=name, lengths=frames)


def subset(items: list[dict[str, Any]], limit: int | None, seed: int) -> list[dict[str, Any]]:
    """``limit`` recordings drawn (seeded) from ``items``, in their order; all without a limit."""
    if not limit or limit >= len(items):
        return items
    import numpy as np

    keep = sorted(np.random.default_rng(seed).permutation(len(items))[:limit].tolist())
    return [items[i] for i in keep]


# --------------------------------------------------------------------------- training and evaluation


def training_text(task: str, epochs: int, seed: int) -> str:
    loss = ("cross-entropy, label smoothing 0.1" if task.startswith("digits")
            else "AAM-softmax (margin 0.2, scale 30) on a cosine head, dropped afterwards")
    return (f"{epochs} epochs, batches of 32 grouped by length (pools of 8 batches), AdamW lr 3e-3 weight decay 1e-3 "
            f"(not on biases/norms), one-cycle schedule (15% warm-up), {loss}, SpecAugment (crop to 85-100% of the "
            f"frames, 2 frequency masks of up to 10 bins, 1 time mask of up to 10%), seed {seed}; reszoo.finetune's loop")


def train(task: str, variant: str, items: list[dict[str, Any]], args: argparse.Namespace) -> tuple[dict[str, Any], float]:
    """Train ``task``'s ``variant`` from scratch on ``items``; its weights as the registry entry
    holds them (the speaker models' cosine head dropped) and the training seconds."""
    import reszoo
    from reszoo.speech.training import SpecAugment
    from scripts.data import FSDD_SPEAKERS

    name = model_name(task, variant)
    if task.startswith("digits"):
        classes = [str(d) for d in range(10)]
        targets = [it["digit"] for it in items]
        loss: dict[str, Any] = dict(label_smoothing=0.1)
    else:
        speakers = sorted({it["speaker"] for it in items})
        classes = [FSDD_SPEAKERS[s] for s in speakers]
        targets = [speakers.index(it["speaker"]) for it in items]
        loss = dict(criterion="aam-softmax")
    data = tensor_data(items, targets, classes, DATASET)
    log(f"{task}/{variant} ({name}): {len(items)} training recordings, {len(classes)} classes, {args.epochs} epochs")
    start = time.perf_counter()
    result = reszoo.finetune(name, data, epochs=args.epochs, seed=args.seed, augment=SpecAugment(), **loss, **RECIPE)
    seconds = time.perf_counter() - start
    state = {k: v.detach() for k, v in result.model.state_dict().items()}
    if not task.startswith("digits"):  # the class directions trained the embedding; the model is the embedding
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    return state, seconds


def published_model(name: str, state: dict[str, Any]) -> Any:
    """The model as ``reszoo.load(name)`` builds it, holding ``state`` (strictly: the file fits the entry)."""
    import reszoo

    model = reszoo.load(name, pretrained=False)
    model.load_state_dict(state)
    return model.eval()


def outputs(model: Any, items: list[dict[str, Any]], embedding: bool = False) -> Any:
    """Per-recording outputs, one recording at a time: exactly what inference on a file computes."""
    import torch

    fn = model.forward_embedding if embedding else model
    with torch.inference_mode():
        return torch.cat([fn(it["feats"][None]) for it in items])


def accuracy(model: Any, items: list[dict[str, Any]]) -> float:
    import torch

    pred = outputs(model, items).argmax(-1)
    return float((pred == torch.tensor([it["digit"] for it in items])).float().mean())


def trials(model: Any, items: list[dict[str, Any]]) -> tuple[Any, Any]:
    """Cosine scores and same-speaker flags of every pair of recordings in ``items``."""
    from reszoo.speech.training import pair_scores

    return pair_scores(outputs(model, items, embedding=True), [it["speaker"] for it in items])


def evaluate(task: str, model: Any, evals: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The task's metrics on its evaluation splits (fractions)."""
    from reszoo.speech.training import eer

    if task.startswith("digits"):
        return {"accuracy": accuracy(model, evals["test"]), "test_recordings": len(evals["test"])}
    scores, targets = trials(model, evals["test"])
    test_eer, _ = eer(scores, targets)
    out: dict[str, Any] = {"eer": test_eer, "test_recordings": len(evals["test"]),
                           "target_trials": int(targets.sum()), "nontarget_trials": int((~targets).sum())}
    if "dev" in evals:  # the verification threshold: the EER point on dev, and what it gives on test
        dev_eer, threshold = eer(*trials(model, evals["dev"]))
        out |= {"dev_eer": dev_eer, "threshold": threshold, "far": float((scores[~targets] >= threshold).mean()),
                "frr": float((scores[targets] < threshold).mean())}
    return out


# --------------------------------------------------------------------------- runs


def runs_of(task: str, items: list[dict[str, Any]], args: argparse.Namespace) -> list[tuple[str | None, list, dict]]:
    """``(fold, training items, evaluation splits)`` of each run the command asks for."""
    from scripts.data import FSDD_SPEAKERS as SPEAKERS

    if task == "digits":
        return [(None, [it for it in items if it["index"] >= 5], {"test": [it for it in items if it["index"] < 5]})]
    if task == "speakers":
        return [(None, [it for it in items if it["index"] >= 10],
                 {"dev": [it for it in items if 5 <= it["index"] < 10], "test": [it for it in items if it["index"] < 5]})]
    out = []
    if task == "digits-heldout":
        for fold in (args.folds or "george").split(","):
            if fold not in SPEAKERS:
                raise SystemExit(f"unknown speaker {fold!r}; FSDD speakers: {', '.join(SPEAKERS)}")
            held = SPEAKERS.index(fold)
            out.append((fold, [it for it in items if it["index"] >= 5 and it["speaker"] != held],
                        {"test": [it for it in items if it["speaker"] == held]}))
        return out
    for fold in (args.folds or "a").split(","):
        if fold not in UNSEEN_FOLDS:
            raise SystemExit(f"unknown fold {fold!r}; speakers-unseen folds: {', '.join(UNSEEN_FOLDS)}")
        held = {SPEAKERS.index(s) for s in UNSEEN_FOLDS[fold]}
        out.append((fold, [it for it in items if it["index"] >= 10 and it["speaker"] not in held],
                    {"test": [it for it in items if it["speaker"] in held]}))
    return out


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """What makes two runs the same run (a result with other settings is redone, not reused)."""
    return {"epochs": args.epochs, "seed": args.seed, "limit": args.limit}


def run_one(task: str, variant: str, fold: str | None, train_items: list[dict[str, Any]],
            evals: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> dict[str, Any] | None:
    """Train and evaluate one run; write its results (and weights) under ``args.out``."""
    import torch

    from scripts.registry_io import COMMIT_LIMIT, write_weights
    from scripts.train_resnet_mnist import hardware

    folder = args.out / task / (variant if fold is None else f"{variant}-{fold}")
    if (folder / RESULTS).is_file() and not args.force:
        done = json.loads((folder / RESULTS).read_text(encoding="utf-8"))
        if {k: done.get(k) for k in settings(args)} == settings(args):
            log(f"{folder / RESULTS} exists with these settings; skipping (--force to redo)")
            return None
    name = model_name(task, variant)
    items = subset(train_items, args.limit, args.seed)
    state, seconds = train(task, variant, items, args)
    model = published_model(name, state)
    metrics = evaluate(task, model, evals)
    log(f"{task}/{variant}{'' if fold is None else ' fold ' + fold}: "
        + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        + f"; trained in {seconds:.0f} s")
    results: dict[str, Any] = {
        "task": task, "variant": variant, "fold": fold, "name": name, **settings(args),
        "smoke": bool(args.limit) or args.epochs != EPOCHS[task], **metrics,
        "train_recordings": len(items), "params": sum(p.numel() for p in model.parameters()),
        "training": training_text(task, args.epochs, args.seed), "train_seconds": round(seconds, 1),
        "train_hardware": hardware("cpu", "fp32", torch.get_num_threads()),
    }
    if fold is not None and task == "speakers-unseen":
        results["speakers"] = list(UNSEEN_FOLDS[fold])
    folder.mkdir(parents=True, exist_ok=True)
    if task in MODELS:  # the published models; held-out folds only measure
        written = write_weights(state, folder / WEIGHTS, max_bytes=COMMIT_LIMIT)
        results |= {"weights_file": WEIGHTS, **written}
        log(f"wrote {folder / WEIGHTS} ({written['size']:,} bytes, sha256 {written['sha256']})")
    (folder / RESULTS).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return results


# --------------------------------------------------------------------------- publishing


def merge_into_entry(name: str, metrics: list[dict[str, Any]], extra: dict[str, Any], weights: dict[str, Any] | None = None,
                     runtime: dict[str, Any] | None = None) -> None:
    """Replace this task's metrics (same name), extra keys and runtime settings; keep the rest."""
    from scripts.registry_io import read_entry, update_entry

    entry = read_entry(name)
    # By name: a held-out metric's split names the folds done, and a new set of folds replaces it.
    names = {m["name"] for m in metrics}
    kept = [dict(m) for m in (entry.get("metrics") or []) if m.get("name") not in names]
    fields: dict[str, Any] = {"metrics": kept + metrics, "extra": {**dict(entry.get("extra") or {}), **extra}}
    if weights:
        fields["weights"] = weights
    if runtime:
        fields["runtime"] = {**dict(entry.get("runtime") or {}), **runtime}
    update_entry(name, **fields)
    log(f"registry.yaml: updated {name}")


def register_digits(per: dict[str, dict[str, Any]], out: Path) -> None:
    from scripts.registry_io import measured

    for variant, r in per.items():
        metric = measured(SCRIPT, DATASET, "test (take index 0-4, 300 recordings)", "accuracy", 100 * r["accuracy"],
                          name="digit accuracy %, official test split")
        extra: dict[str, Any] = {k: r[k] for k in ("params", "epochs", "seed", "training", "train_hardware")}
        extra["train_seconds"] = round(r["train_seconds"])
        if len(per) == 2:
            extra["test_accuracy_residual_vs_plain"] = {v: round(per[v]["accuracy"], 4) for v in VARIANTS}
        merge_into_entry(r["name"], [metric], extra, publish_weights(r, out))


def register_speakers(per: dict[str, dict[str, Any]], out: Path) -> None:
    from scripts.registry_io import measured

    for variant, r in per.items():
        split = "test (take index 0-4, 300 recordings, all 44,850 pairs; the same 6 speakers as training)"
        metric = measured(SCRIPT, DATASET, split, "eer", 100 * r["eer"], name="EER % (cosine), seen speakers, new recordings")
        extra: dict[str, Any] = {k: r[k] for k in ("params", "epochs", "seed", "training", "train_hardware")}
        extra |= {
            "train_seconds": round(r["train_seconds"]),
            "verify_threshold_source": f"EER point on the dev split (take index 5-9; dev EER {100 * r['dev_eer']:.2f}%); "
                                       f"on test it gives FAR {100 * r['far']:.2f}% / FRR {100 * r['frr']:.2f}%",
            "split": "train: take index 10-49 (2,400); dev: 5-9 (300, threshold); test: 0-4 (300)",
        }
        if len(per) == 2:
            extra["test_eer_percent_residual_vs_plain"] = {v: round(100 * per[v]["eer"], 3) for v in VARIANTS}
        # The threshold changes what model.verify answers: a runtime setting, not a card fact.
        merge_into_entry(r["name"], [metric], extra, publish_weights(r, out),
                         runtime={"verify_threshold": round(r["threshold"], 4)})


def register_folds(task: str, folds: dict[str, dict[str, dict[str, Any]]]) -> None:
    """A held-out task's registry metric: the mean over the folds done for both twins."""
    import numpy as np

    from scripts.registry_io import measured

    both = [f for f in folds["residual"] if f in folds["plain"]]
    if not both:
        log(f"{task}: no fold done for both twins yet; registry not written")
        return
    key = "accuracy" if task == "digits-heldout" else "eer"
    means = {v: float(np.mean([folds[v][f][key] for f in both])) for v in VARIANTS}
    if task == "digits-heldout":
        which = ", ".join(both)
        split = (f"held-out speaker {which} (train: the other 5 speakers' take 5-49; test: all 500 takes of {which})"
                 if len(both) == 1 else
                 f"leave-one-speaker-out, mean over held-out speakers {which} (train: the other 5 speakers' take 5-49; "
                 "test: all 500 takes of the held-out one)")
        metric_name, extra_key = "digit accuracy % on an unseen speaker", "heldout_speaker_accuracy_residual_vs_plain"
        labels = {f: f for f in both}
        scale, digits = 1, 4
    else:
        labels = {f: "+".join(UNSEEN_FOLDS[f]) for f in both}
        which = "; ".join(" and ".join(UNSEEN_FOLDS[f]) for f in both)
        split = (f"unseen speakers {which} (train: the other 4 speakers' take 10-49; test: all pairs of the held-out "
                 "speakers' 1,000 recordings" + (")" if len(both) == 1 else f"; mean of {len(both)} folds)"))
        metric_name, extra_key = "EER % (cosine), speakers not seen in training", "unseen_speaker_eer_percent_residual_vs_plain"
        scale, digits = 100, 3
    log(f"{task} ({which}): " + ", ".join(f"{v} {100 * m:.2f}%" for v, m in means.items()))
    for variant in VARIANTS:
        metric = measured(SCRIPT, DATASET, split, key, 100 * means[variant], name=metric_name)
        extra = {extra_key: {v: {labels[f]: round(scale * folds[v][f][key], digits) for f in both} for v in VARIANTS}}
        merge_into_entry(model_name(task, variant), [metric], extra)


def publish_weights(r: dict[str, Any], out: Path) -> dict[str, Any]:
    dest = ROOT / "weights" / "reszoo" / r["name"] / r["weights_file"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / r["task"] / r["variant"] / r["weights_file"], dest)
    log(f"weights: {dest.relative_to(ROOT)}")
    return {"sha256": r["sha256"], "size": r["size"]}


def checked_results(out: Path, tasks: Iterable[str] | None) -> list[dict[str, Any]]:
    """The results under ``out`` (of ``tasks``), refused if any is a smoke run, has weights that
    differ from what it recorded, or was made with other settings than the rest of its task."""
    from reszoo.hub import sha256_of
    from scripts.registry_io import COMMIT_LIMIT

    results = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(out.glob(f"*/*/{RESULTS}"))]
    if tasks is not None:
        results = [r for r in results if r["task"] in tasks]
    if not results:
        raise SystemExit(f"--register-from {out}: no {RESULTS} under {out}/<task>/<run>/ (the --out of a training run)")
    for r in results:
        where = out / r["task"] / (r["variant"] if r["fold"] is None else f"{r['variant']}-{r['fold']}")
        if r.get("smoke"):
            raise SystemExit(f"{where}: a smoke run (--limit, or epochs other than the recipe's); it cannot be registered")
        if "weights_file" in r:
            source = where / r["weights_file"]
            if not source.is_file() or sha256_of(source) != r["sha256"] or r["size"] > COMMIT_LIMIT:
                raise SystemExit(f"{source}: missing, or its sha256 or size differs from its {RESULTS} (or is over the commit limit)")
    for task in {r["task"] for r in results}:
        seeds = {r["seed"] for r in results if r["task"] == task}
        if len(seeds) > 1:
            raise SystemExit(f"{out}/{task}: runs with different seeds ({sorted(seeds)}); one recipe per task: "
                             "redo the odd ones (--force) with the same --seed")
    return results


def register_from(out: Path, tasks: Iterable[str] | None = None) -> list[str]:
    """Publish the results folder ``out``: weights into weights/, numbers into registry.yaml, the
    regenerated model cards. Returns the tasks registered."""
    from reszoo.cards import write_cards

    results = checked_results(out, tasks)
    done = sorted({r["task"] for r in results}, key=list(EPOCHS).index)
    for task in done:
        mine = [r for r in results if r["task"] == task]
        if task in MODELS:
            per = {r["variant"]: r for r in mine}
            (register_digits if task == "digits" else register_speakers)(per, out)
        else:
            register_folds(task, {v: {r["fold"]: r for r in mine if r["variant"] == v} for v in VARIANTS})
    write_cards(ROOT / "model_cards")  # as scripts/make_cards.py writes them
    log(f"registered {', '.join(done)} from {out}; cards regenerated")
    return done


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.train_fsdd", description=__doc__.split("\n\n")[0])
    p.add_argument("command", nargs="?", choices=[*EPOCHS, "features"])
    p.add_argument("--data", type=Path, default=None, help="folder holding recordings/ (default $RESZOO_DATA/fsdd or ../shared/data/fsdd)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"feature cache folder (default {DEFAULT_CACHE.relative_to(ROOT)})")
    p.add_argument("--epochs", type=int, default=None, help="default: the recipe's (20 digits, 15 speakers); others are a smoke run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="smoke run: a seeded N of the training recordings")
    p.add_argument("--folds", default=None, help="comma-separated folds to run now (heldout: speaker names; unseen: a,b,c)")
    p.add_argument("--force", action="store_true", help="redo runs whose results exist with these settings")
    p.add_argument("--variants", default="residual,plain", help="which twins to train now")
    p.add_argument("--threads", type=int, default=int(os.environ.get("RESZOO_THREADS", "1")),
                   help="CPU threads (1: on a loaded, shared CPU more threads were far slower)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results folder (default {DEFAULT_OUT.relative_to(ROOT)})")
    p.add_argument("--register", action="store_true", help="after the runs, publish the command's task from --out")
    p.add_argument("--register-from", type=Path, default=None, metavar="DIR",
                   help="publish the results that runs wrote into DIR (no training)")
    args = p.parse_args(argv)
    if args.register_from is None and args.command is None:
        p.error("give a command (digits, digits-heldout, speakers, speakers-unseen, features) or --register-from DIR")
    args.recipe_epochs = EPOCHS.get(args.command or "", 0)
    if args.epochs is None:
        args.epochs = args.recipe_epochs
    if args.register and (args.register_from or args.command == "features" or args.limit or args.epochs != args.recipe_epochs):
        p.error("--register publishes the recipe's runs made now: not with --limit, other --epochs, --register-from or features")
    bad = [v for v in args.variants.split(",") if v and v not in VARIANTS]
    if bad:
        p.error(f"unknown variants {bad}; choose from {list(VARIANTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.register_from is not None:
        register_from(args.register_from)
        return 0
    import torch

    torch.set_num_threads(args.threads)
    items = load_features(args.data, args.cache)
    log(f"{len(items)} recordings; {args.command}, epochs {args.epochs}, seed {args.seed}"
        + (f", smoke run on {args.limit} training recordings" if args.limit else ""))
    if args.command == "features":
        return 0
    for fold, train_items, evals in runs_of(args.command, items, args):
        for variant in [v for v in args.variants.split(",") if v]:
            run_one(args.command, variant, fold, train_items, evals, args)
    if args.register:
        register_from(args.out, [args.command])
    return 0


if __name__ == "__main__":
    sys.exit(main())
