"""Train reszoo's speech models on the Free Spoken Digit Dataset (FSDD), residual and plain twins.

    nice -n 10 python -m scripts.train_fsdd digits            # tdnn-fsdd-digits (+ -plain), official split
    nice -n 10 python -m scripts.train_fsdd digits-heldout    # digit accuracy on an unseen speaker (george)
    nice -n 10 python -m scripts.train_fsdd speakers          # ecapa-fsdd-speakers (+ -plain), EER
    nice -n 10 python -m scripts.train_fsdd speakers-unseen   # EER on 2 speakers never seen (george, jackson)

Data: ``$RESZOO_DATA/fsdd`` or ``../shared/data/fsdd/recordings/{digit}_{speaker}_{index}.wav`` (8 kHz; official split:
take index 0-4 test, 5-49 train), or ``--data DIR``. Features are computed once with the models'
own front end (``reszoo.speech.SpeechPreprocess``: 8 kHz -> 16 kHz, 80 log-mel, sentence mean
norm) and cached under ``runs/fsdd/``. Each command is seeded (``--seed``, default 0) and trains
the residual model and its plain twin the same way (``--variants residual,plain``; one per run
keeps each run short on a shared CPU). Each variant's result is kept in ``runs/fsdd/<task>/``;
the registry (scripts/registry_io.py) gets each model's measured metrics, and the side-by-side
residual-vs-plain numbers in ``extra`` once both twins are done with the same settings.
``digits`` and ``speakers`` also write ``weights/reszoo/<name>/model.safetensors`` and its
sha256/size. Held-out folds: ``--folds`` (speaker names for digits-heldout, default george, the
first alphabetically; a/b/c = george+jackson / lucas+nicolas / theo+yweweler for
speakers-unseen, default a); the metric is the mean over the folds done for both twins.
Training runs on one thread by default (``--threads``): on a loaded, shared CPU more threads were
far slower.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reszoo.speech import FbankConfig, SpeechPreprocess
from reszoo.speech.models import archs
from reszoo.speech.training import AAMSoftmax, eer, pair_scores, spec_augment
from scripts.data import FSDD_SPEAKERS as SPEAKERS
from scripts.data import fsdd_recordings
from scripts.registry_io import COMMIT_LIMIT, measured, read_entry, update_entry, write_weights

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = "scripts/train_fsdd.py"
RUNS = ROOT / "runs" / "fsdd"
DATASET = "free-spoken-digit-dataset"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- data


def load_features(data: Path) -> list[dict[str, Any]]:
    """Every recording's features (frames, 80) with its digit, speaker and take index; cached."""
    try:
        recordings = fsdd_recordings(data)
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from None
    cfg = FbankConfig()
    key = hashlib.sha256(json.dumps(cfg.to_preprocess(), sort_keys=True).encode()).hexdigest()[:12]
    cache = RUNS / f"fbank-{key}.pt"
    if cache.is_file():
        items = torch.load(cache, weights_only=True)
        if len(items["names"]) == len(recordings):
            log(f"features from cache {cache.relative_to(ROOT)}")
            return [dict(name=n, feats=f, digit=d, speaker=s, index=i) for n, f, d, s, i in
                    zip(items["names"], items["feats"], items["digit"], items["speaker"], items["index"], strict=True)]
    log(f"computing features of {len(recordings)} recordings")
    preprocess = SpeechPreprocess(cfg)
    out = []
    for rec in recordings:
        out.append(dict(name=rec["name"], feats=preprocess(rec["path"]), digit=rec["digit"], speaker=rec["speaker"],
                        index=rec["index"]))
    RUNS.mkdir(parents=True, exist_ok=True)
    torch.save({"names": [o["name"] for o in out], "feats": [o["feats"] for o in out],
                "digit": [o["digit"] for o in out], "speaker": [o["speaker"] for o in out],
                "index": [o["index"] for o in out]}, cache)
    return out


def batches(items: list[dict[str, Any]], batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """Shuffled batches of similar lengths (less padding): sort within random pools of 8 batches."""
    order = rng.permutation(len(items))
    pool = batch_size * 8
    out = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start:start + pool], key=lambda i: items[i]["feats"].shape[0])
        out += [chunk[j:j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(out)
    return out


def collate(items: list[dict[str, Any]], idx: list[int], label: str, rng: np.random.Generator,
            augment: bool) -> tuple[Tensor, Tensor, Tensor]:
    feats = []
    for i in idx:
        f = items[i]["feats"].clone()
        if augment:
            f = spec_augment(f, rng)
        feats.append(f)
    frames = max(f.shape[0] for f in feats)
    x = torch.zeros(len(feats), frames, feats[0].shape[1])
    for k, f in enumerate(feats):
        x[k, : f.shape[0]] = f
    lengths = torch.tensor([f.shape[0] / frames for f in feats])
    y = torch.tensor([items[i][label] for i in idx])
    return x, lengths, y


# --------------------------------------------------------------------------- training


def train(model: nn.Module, items: list[dict[str, Any]], *, label: str, epochs: int, seed: int,
          batch_size: int = 32, lr: float = 3e-3, criterion: nn.Module | None = None, tag: str = "") -> float:
    """Train in place; return the wall time. ``criterion`` (on the embedding) or cross-entropy on logits."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    params = list(model.parameters()) + (list(criterion.parameters()) if criterion is not None else [])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-3)
    steps = epochs * math.ceil(len(items) / batch_size) + epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    t0 = time.time()
    for epoch in range(epochs):
        model.train()
        total, seen = 0.0, 0
        for idx in batches(items, batch_size, rng):
            x, lengths, y = collate(items, idx, label, rng, augment=True)
            if criterion is None:
                loss = F.cross_entropy(model(x, lengths), y, label_smoothing=0.1)
            else:
                loss = criterion(model.forward_embedding(x, lengths), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        if epoch == 0 or (epoch + 1) % 5 == 0 or epoch + 1 == epochs:
            log(f"{tag} epoch {epoch + 1}/{epochs} loss {total / seen:.4f} ({time.time() - t0:.0f} s)")
    model.eval()
    return time.time() - t0


@torch.inference_mode()
def outputs(model: nn.Module, items: list[dict[str, Any]], embedding: bool = False) -> Tensor:
    """Per-utterance outputs, one utterance at a time: exactly what inference on a file computes."""
    model.eval()
    fn = model.forward_embedding if embedding else model
    return torch.cat([fn(it["feats"][None]) for it in items])


def accuracy(model: nn.Module, items: list[dict[str, Any]]) -> float:
    pred = outputs(model, items).argmax(-1)
    return float((pred == torch.tensor([it["digit"] for it in items])).float().mean())


def trials(model: nn.Module, items: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores and same-speaker flags of every pair of recordings in ``items``."""
    return pair_scores(outputs(model, items, embedding=True), [it["speaker"] for it in items])


# --------------------------------------------------------------------------- registry


def save_weights(model: nn.Module, name: str) -> dict[str, Any]:
    path = ROOT / "weights" / "reszoo" / name / "model.safetensors"
    written = write_weights(model.state_dict(), path, max_bytes=COMMIT_LIMIT)
    log(f"wrote {path.relative_to(ROOT)} ({written['size']} bytes, sha256 {written['sha256']})")
    return written


def merge_into_entry(name: str, metrics: list[dict[str, Any]], extra: dict[str, Any], weights: dict[str, Any] | None = None,
                     runtime: dict[str, Any] | None = None) -> None:
    """Replace this run's metrics (same dataset/split/metric/name), extra keys and runtime settings; keep the rest."""
    entry = read_entry(name)
    key = lambda m: (m["dataset"], m["split"], m["metric"], m.get("name"))  # noqa: E731
    new_keys = {key(m) for m in metrics}
    kept = [dict(m) for m in (entry.get("metrics") or []) if key(m) not in new_keys]
    merged_extra = {**dict(entry.get("extra") or {}), **extra}
    fields: dict[str, Any] = {"metrics": kept + metrics, "extra": merged_extra}
    if weights:
        fields["weights"] = weights
    if runtime:
        fields["runtime"] = {**dict(entry.get("runtime") or {}), **runtime}
    update_entry(name, **fields)
    log(f"registry.yaml: updated {name}")


def params_of(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def fold_file(task: str, variant: str, fold: str) -> Path:
    return RUNS / task / f"{variant}-{fold}.json"


# --------------------------------------------------------------------------- commands


VARIANTS = {"residual": True, "plain": False}


def finished_folds(task: str, folds: Iterable[str], args: argparse.Namespace) -> dict[str, dict[str, dict[str, Any]]]:
    """The saved fold results of each twin (``fold_file``) from runs with this run's epochs and seed,
    by variant and fold, in the order of ``folds``."""
    per: dict[str, dict[str, dict[str, Any]]] = {v: {} for v in VARIANTS}
    for variant in VARIANTS:
        for fold in folds:
            f = fold_file(task, variant, fold)
            if f.is_file():
                rec = json.loads(f.read_text())
                if rec["epochs"] == args.epochs and rec["seed"] == args.seed:
                    per[variant][fold] = rec
    return per


def variants_of(args: argparse.Namespace) -> list[str]:
    names = [v for v in args.variants.split(",") if v]  # "" trains none: re-register saved results
    bad = [v for v in names if v not in VARIANTS]
    if bad:
        raise SystemExit(f"unknown variants {bad}; choose from {list(VARIANTS)}")
    return names


def load_results(task: str, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """This recipe's finished results (same epochs and seed) per variant."""
    out = {}
    for variant in VARIANTS:
        f = RUNS / task / f"{variant}.json"
        if f.is_file():
            rec = json.loads(f.read_text())
            if rec["epochs"] == args.epochs and rec["seed"] == args.seed:
                out[variant] = rec
    return out


def save_result(task: str, variant: str, record: dict[str, Any]) -> None:
    f = RUNS / task / f"{variant}.json"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(record, indent=1))


def cmd_digits(items: list[dict[str, Any]], args: argparse.Namespace) -> None:
    train_items = [it for it in items if it["index"] >= 5]
    test_items = [it for it in items if it["index"] < 5]
    for variant in variants_of(args):
        name = "tdnn-fsdd-digits" + ("" if VARIANTS[variant] else "-plain")
        torch.manual_seed(args.seed)
        model = archs["tdnn_small"](residual=VARIANTS[variant], num_classes=10)
        seconds = train(model, train_items, label="digit", epochs=args.epochs, seed=args.seed, tag=f"digits/{variant}")
        acc = accuracy(model, test_items)
        log(f"digits/{variant}: test accuracy {acc:.4f} ({len(test_items)} recordings), trained in {seconds:.0f} s")
        weights = save_weights(model, name)
        save_result("digits", variant, dict(name=name, accuracy=acc, train_seconds=seconds, params=params_of(model),
                                            epochs=args.epochs, seed=args.seed, weights=weights))
    results = load_results("digits", args)
    for variant, r in results.items():
        metric = measured(SCRIPT, DATASET, "test (take index 0-4, 300 recordings)", "accuracy", 100 * r["accuracy"],
                          name="digit accuracy %, official test split")
        extra: dict[str, Any] = {"params": r["params"], "train_seconds": round(r["train_seconds"]), "epochs": r["epochs"], "seed": r["seed"]}
        if len(results) == 2:
            extra["test_accuracy_residual_vs_plain"] = {v: round(results[v]["accuracy"], 4) for v in VARIANTS}
        merge_into_entry(r["name"], [metric], extra, r["weights"])
    if len(results) < 2:
        log("the other twin has not been trained with these settings yet; run it to complete the comparison")


def cmd_digits_heldout(items: list[dict[str, Any]], args: argparse.Namespace) -> None:
    for fold in (args.folds or "george").split(","):
        if fold not in SPEAKERS:
            raise SystemExit(f"unknown speaker {fold!r}; FSDD speakers: {', '.join(SPEAKERS)}")
        held = SPEAKERS.index(fold)
        train_items = [it for it in items if it["index"] >= 5 and it["speaker"] != held]
        test_items = [it for it in items if it["speaker"] == held]
        for variant in variants_of(args):
            out = fold_file("digits-heldout", variant, fold)
            if out.is_file() and not args.force:
                log(f"{out.relative_to(ROOT)} exists; skipping (--force to redo)")
                continue
            torch.manual_seed(args.seed)
            model = archs["tdnn_small"](residual=VARIANTS[variant], num_classes=10)
            seconds = train(model, train_items, label="digit", epochs=args.epochs, seed=args.seed, tag=f"heldout-{fold}/{variant}")
            acc = accuracy(model, test_items)
            log(f"held-out speaker {fold} ({variant}): accuracy {acc:.4f} on {len(test_items)} recordings")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"speaker": fold, "variant": variant, "accuracy": acc, "epochs": args.epochs,
                                       "seed": args.seed, "train_seconds": seconds, "n_test": len(test_items)}))
    write_heldout_digits(args)


def write_heldout_digits(args: argparse.Namespace) -> None:
    """Registry metric: mean accuracy over the held-out speakers done for both twins."""
    per = {v: {spk: rec["accuracy"] for spk, rec in recs.items()}
           for v, recs in finished_folds("digits-heldout", SPEAKERS, args).items()}
    both = [spk for spk in SPEAKERS if all(spk in per[v] for v in VARIANTS)]
    if not both:
        log("no held-out speaker done for both twins yet; registry not written")
        return
    means = {v: float(np.mean([per[v][spk] for spk in both])) for v in VARIANTS}
    which = ", ".join(both)
    split = (f"held-out speaker {which} (train: the other 5 speakers' take 5-49; test: all 500 takes of {which})" if len(both) == 1 else
             f"leave-one-speaker-out, mean over held-out speakers {which} (train: the other 5 speakers' take 5-49; test: all 500 takes of the held-out one)")
    log(f"held-out speaker accuracy ({which}): " + ", ".join(f"{v} {m:.4f}" for v, m in means.items()))
    for variant, name in (("residual", "tdnn-fsdd-digits"), ("plain", "tdnn-fsdd-digits-plain")):
        metric = measured(SCRIPT, DATASET, split, "accuracy", 100 * means[variant], name="digit accuracy % on an unseen speaker")
        extra = {"heldout_speaker_accuracy_residual_vs_plain": {v: {spk: round(per[v][spk], 4) for spk in both} for v in VARIANTS}}
        merge_into_entry(name, [metric], extra)


def train_speaker_model(train_items: list[dict[str, Any]], residual: bool, args: argparse.Namespace, tag: str) -> tuple[nn.Module, float]:
    torch.manual_seed(args.seed)
    model = archs["ecapa_tdnn_small"](residual=residual)
    classes = sorted({it["speaker"] for it in train_items})
    remap = {c: i for i, c in enumerate(classes)}
    relabelled = [{**it, "spk": remap[it["speaker"]]} for it in train_items]
    criterion = AAMSoftmax(model.embed_dim, len(classes))
    seconds = train(model, relabelled, label="spk", epochs=args.epochs, seed=args.seed, criterion=criterion, tag=tag)
    return model, seconds


def cmd_speakers(items: list[dict[str, Any]], args: argparse.Namespace) -> None:
    train_items = [it for it in items if it["index"] >= 10]
    dev_items = [it for it in items if 5 <= it["index"] < 10]
    test_items = [it for it in items if it["index"] < 5]
    for variant in variants_of(args):
        name = "ecapa-fsdd-speakers" + ("" if VARIANTS[variant] else "-plain")
        model, seconds = train_speaker_model(train_items, VARIANTS[variant], args, f"speakers/{variant}")
        dev_eer, threshold = eer(*trials(model, dev_items))
        scores, targets = trials(model, test_items)
        test_eer, _ = eer(scores, targets)
        far = float((scores[~targets] >= threshold).mean())
        frr = float((scores[targets] < threshold).mean())
        log(f"speakers/{variant}: test EER {100 * test_eer:.2f}% ({targets.sum()} target / {(~targets).sum()} non-target trials); "
            f"dev EER {100 * dev_eer:.2f}% at threshold {threshold:.3f} -> test FAR {100 * far:.2f}% FRR {100 * frr:.2f}%")
        weights = save_weights(model, name)
        save_result("speakers", variant, dict(name=name, test_eer=test_eer, dev_eer=dev_eer, threshold=threshold, far=far, frr=frr,
                                              train_seconds=seconds, params=params_of(model), epochs=args.epochs,
                                              seed=args.seed, weights=weights))
    results = load_results("speakers", args)
    for variant, r in results.items():
        split = "test (take index 0-4, 300 recordings, all 44,850 pairs; the same 6 speakers as training)"
        metric = measured(SCRIPT, DATASET, split, "eer", 100 * r["test_eer"], name="EER % (cosine), seen speakers, new recordings")
        extra: dict[str, Any] = {
            "params": r["params"],
            "train_seconds": round(r["train_seconds"]),
            "epochs": r["epochs"],
            "seed": r["seed"],
            "verify_threshold_source": f"EER point on the dev split (take index 5-9; dev EER {100 * r['dev_eer']:.2f}%); "
                                       f"on test it gives FAR {100 * r['far']:.2f}% / FRR {100 * r['frr']:.2f}%",
            "split": "train: take index 10-49 (2,400); dev: 5-9 (300, threshold); test: 0-4 (300)",
        }
        if len(results) == 2:
            extra["test_eer_percent_residual_vs_plain"] = {v: round(100 * results[v]["test_eer"], 3) for v in VARIANTS}
        # The threshold changes what model.verify answers: a runtime setting, not a card fact.
        merge_into_entry(r["name"], [metric], extra, r["weights"], runtime={"verify_threshold": round(r["threshold"], 4)})
    if len(results) < 2:
        log("the other twin has not been trained with these settings yet; run it to complete the comparison")


UNSEEN_FOLDS = {"a": ("george", "jackson"), "b": ("lucas", "nicolas"), "c": ("theo", "yweweler")}


def cmd_speakers_unseen(items: list[dict[str, Any]], args: argparse.Namespace) -> None:
    folds = (args.folds or "a").split(",")
    for fold in folds:
        held = {SPEAKERS.index(s) for s in UNSEEN_FOLDS[fold]}
        train_items = [it for it in items if it["index"] >= 10 and it["speaker"] not in held]
        test_items = [it for it in items if it["speaker"] in held]
        for variant in variants_of(args):
            residual = VARIANTS[variant]
            out = fold_file("speakers-unseen", variant, fold)
            if out.is_file() and not args.force:
                log(f"{out.relative_to(ROOT)} exists; skipping (--force to redo)")
                continue
            model, seconds = train_speaker_model(train_items, residual, args, f"unseen-{fold}/{variant}")
            value, _ = eer(*trials(model, test_items))
            log(f"unseen speakers {UNSEEN_FOLDS[fold]} ({variant}): EER {100 * value:.2f}%")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"fold": fold, "speakers": UNSEEN_FOLDS[fold], "variant": variant, "eer": value,
                                       "epochs": args.epochs, "seed": args.seed, "train_seconds": seconds}))
    per = {v: {"+".join(rec["speakers"]): rec["eer"] for rec in recs.values()}
           for v, recs in finished_folds("speakers-unseen", UNSEEN_FOLDS, args).items()}
    both = [k for k in per["residual"] if k in per["plain"]]
    if not both:
        log("no unseen-speaker fold done for both twins yet; registry not written")
        return
    means = {v: float(np.mean([per[v][k] for k in both])) for v in VARIANTS}
    which = "; ".join(k.replace("+", " and ") for k in both)
    log(f"unseen-speaker EER ({which}): " + ", ".join(f"{v} {100 * m:.2f}%" for v, m in means.items()))
    for variant, name in (("residual", "ecapa-fsdd-speakers"), ("plain", "ecapa-fsdd-speakers-plain")):
        split = (f"unseen speakers {which} (train: the other 4 speakers' take 10-49; test: all pairs of the held-out speakers' 1,000 recordings"
                 + (")" if len(both) == 1 else f"; mean of {len(both)} folds)"))
        metric = measured(SCRIPT, DATASET, split, "eer", 100 * means[variant], name="EER % (cosine), speakers not seen in training")
        extra = {"unseen_speaker_eer_percent_residual_vs_plain": {v: {k: round(100 * per[v][k], 3) for k in both} for v in VARIANTS}}
        merge_into_entry(name, [metric], extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["digits", "digits-heldout", "speakers", "speakers-unseen", "features"])
    parser.add_argument("--data", type=Path, default=None, help="folder holding recordings/ (default $RESZOO_DATA/fsdd or ../shared/data/fsdd)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", default=None, help="comma-separated folds to run now (heldout: speaker names; unseen: a,b,c)")
    parser.add_argument("--force", action="store_true", help="redo folds whose result file exists")
    parser.add_argument("--variants", default="residual,plain", help="which twins to train now (digits, speakers); '' re-registers saved results")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("RESZOO_THREADS", "1")))
    args = parser.parse_args()
    if args.epochs is None:
        args.epochs = {"digits": 20, "digits-heldout": 20, "speakers": 15, "speakers-unseen": 15}.get(args.command, 0)
    torch.set_num_threads(args.threads)
    items = load_features(args.data)
    log(f"{len(items)} recordings, command {args.command}, epochs {args.epochs}, seed {args.seed}")
    {"digits": cmd_digits, "digits-heldout": cmd_digits_heldout, "speakers": cmd_speakers,
     "speakers-unseen": cmd_speakers_unseen, "features": lambda *_: None}[args.command](items, args)


if __name__ == "__main__":
    main()
