"""scripts/residual_study.py and scripts/residual_report.py: a tiny seeded run is reproducible and
complete, the augmentation crops what it should, saved weights load back, and the report's verdicts
follow their stated rules on hand-made results."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import reszoo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import residual_report as report  # noqa: E402
import residual_study as study  # noqa: E402

TINY = study.Recipe(epochs=1, train_subset=64, batch_size=32, lesion_images=32, lesion_ks=(1, 2), lesion_trials=1,
                    flow_images=16, precision="fp32", channels_last=False)


def tiny_data(recipe: study.Recipe = TINY) -> study.DeviceData:
    gen = np.random.default_rng(0)
    arrays = (gen.integers(0, 256, (80, 28, 28), dtype=np.uint8), gen.integers(0, 10, 80, dtype=np.uint8),
              gen.integers(0, 256, (40, 28, 28), dtype=np.uint8), gen.integers(0, 10, 40, dtype=np.uint8))
    return study.DeviceData.make(arrays, recipe, torch.device("cpu"))


def _without_times(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("wall_seconds", "epoch_seconds", "finished")}


def test_a_seeded_run_is_reproducible_and_records_everything(tmp_path: Path) -> None:
    data = tiny_data()
    first, model = study.train_run(TINY, data, 8, True, 0, torch.device("cpu"))
    second, _ = study.train_run(TINY, data, 8, True, 0, torch.device("cpu"))
    assert _without_times(first) == _without_times(second)
    assert first["steps"] == 2 and first["warmup_steps"] == 1 and len(first["train_loss_curve"]) == 1
    assert first["name"] == "resnet8-fashion-mnist" and first["classes"] == 10 and first["cuda_graph"] is False
    assert len(first["gradient_flow"]["init"]["input_grad_norm"]) == 3 and first["gradient_flow"]["init"]["train_mode"]
    assert first["final"]["train_images"] == 64 and first["final"]["test_images"] == 40
    assert first["lesion"]["samples"] == 32 and first["lesion"]["removal"] == ["shortcut"] * 3
    # resnet8's only blocks that keep their shape: stage 1's (16 -> 16 channels at stride 1)
    assert first["lesion"]["candidates"] == ["layer1.0"]
    json.dumps(first, allow_nan=False)  # plain JSON, no NaN

    folder = study.save_weights(model, first, TINY, tmp_path)
    loaded = reszoo.load(str(folder))
    x = torch.rand(2, 1, 28, 28)
    assert loaded.entry.metrics[0].value == round(first["final"]["test_acc"], 2)
    assert torch.allclose(loaded(loaded.preprocess(x)), model.to("cpu").eval()(loaded.preprocess(x)), atol=1e-6)


def test_register_publishes_only_the_studys_own_runs() -> None:
    runs = [dict(r, recipe={"epochs": 5}) for r in textbook(0)]
    saved = [{"name": "resnet56-fashion-mnist", "extra": {"residual": True, "seed": 0},
              "metrics": [{"metric": "accuracy", "value": round(runs[4]["final"]["test_acc"], 2)}]}]
    study.check_saved_pair(runs, 56, saved)  # the record of its depth, twin and seed: accepted
    with pytest.raises(SystemExit, match="no run record of depth 56, seed 0 with its test accuracy 12.0"):
        study.check_saved_pair(runs, 56, [dict(saved[0], metrics=[{"metric": "accuracy", "value": 12.0}])])
    with pytest.raises(SystemExit, match="no run record of depth 56, seed 1"):
        study.check_saved_pair(runs, 56, [dict(saved[0], extra={"residual": True, "seed": 1})])
    with pytest.raises(SystemExit, match="the image runs hold 2 recipes"):
        study.check_saved_pair(runs + [dict(runs[0], recipe={"epochs": 1})], 56, saved)


def test_random_crops_are_windows_of_the_padded_image() -> None:
    data = tiny_data()
    idx = torch.arange(6)
    crops = data.random_crops(idx, torch.Generator().manual_seed(0))
    assert crops.shape == (6, 1, 28, 28) and crops.dtype == torch.uint8
    seen = set()
    for i, crop in zip(idx.tolist(), crops):
        windows = [(dy, dx) for dy in range(5) for dx in range(5)
                   if torch.equal(data.x_train_padded[i, :, dy:dy + 28, dx:dx + 28], crop)]
        assert windows, f"crop {i} is no 28x28 window of the 2-pixel padded image"
        seen.add(windows[0])
    assert len(seen) > 1  # offsets vary


def test_architectures_follow_he_et_al() -> None:
    assert study.arch_of(110, True) == ("resnet110", {"in_chans": 1})
    arch, args = study.arch_of(8, False)
    assert arch == "resnet" and args["layers"] == [1, 1, 1] and args["residual"] is False
    deep = reszoo.api.build(study.run_entry(TINY, 110, True))
    assert len(list(reszoo.nn.residual_blocks(deep))) == 54  # 3 stages x 18 blocks, 6n + 2 = 110 layers
    with pytest.raises(SystemExit, match="6n \\+ 2"):
        study.arch_of(9, True)


# --------------------------------------------------------------------------- report


def fake_run(depth: int, residual: bool, seed: int, *, test: float, train: float, loss: float, grad_ratio: float,
             lesion_single: float, baseline: float | None = None) -> dict[str, Any]:
    """A run record with the fields the report reads; block gradients fall geometrically to ``grad_ratio``."""
    n = (depth - 2) // 2
    baseline = test if baseline is None else baseline
    grads = [10 ** (grad_ratio * (1 - i / (n - 1))) for i in range(n)]
    names = [f"b{i}" for i in range(n)]
    return {
        "depth": depth, "residual": residual, "seed": seed, "params": 1000 * depth, "classes": 10, "dataset": "fashion-mnist",
        "final": {"test_acc": test, "train_acc": train, "train_loss": loss, "train_images": 20000, "test_images": 10000},
        "gradient_flow": {"init": {"input_grad_norm": grads}, "end": {"input_grad_norm": grads}},
        "gradient_correlation": {"init": {"correlation": [0.9]}, "end": {"correlation": [0.8]}},
        "lesion": {"baseline": baseline, "blocks": names, "candidates": names, "single": [lesion_single] * n,
                   "random": [{"k": 1, "mean": lesion_single, "std": 0.0}]},
        "train_loss_curve": [loss * 2, loss], "wall_seconds": {"total": 10.0}, "steps": 100, "precision": "bfloat16",
        "device": "test", "recipe": dataclasses.asdict(TINY) | {"optimizer": "SGD", "schedule": "cosine", "augmentation": "crop", "init": "He"},
    }


def textbook(seed: int) -> list[dict[str, Any]]:
    """He et al.'s picture: plain nets degrade with depth and explode/vanish, ResNets do not."""
    jitter = 0.01 * seed
    runs = []
    for depth, plain_train in ((8, 92.0), (20, 93.0), (56, 88.0)):
        runs.append(fake_run(depth, True, seed, test=91 + depth / 100 + jitter, train=95 + depth / 100, loss=0.10 - depth / 2000,
                             grad_ratio=0.2, lesion_single=90.0))
        runs.append(fake_run(depth, False, seed, test=plain_train - 2 + jitter, train=plain_train, loss=0.3 + depth / 1000,
                             grad_ratio=1.5 if depth == 56 else 0.5, lesion_single=30.0))
    return runs


def test_verdicts_on_he_et_als_picture() -> None:
    agg = report.aggregate(textbook(0) + textbook(1))
    v = {x.claim.split(".")[0]: x for x in report.verdicts(agg)}
    assert [v[k].verdict for k in "12345"] == ["supported", "supported", "supported", "supported", "not supported"]
    assert "plain +1.50 (plain: growing toward the input (exploding))" in v["1"].evidence
    assert "no depth where both twins reach the same training accuracy" in v["5"].evidence  # 2+ points apart everywhere


def test_verdicts_when_the_skips_change_nothing() -> None:
    same = [fake_run(d, r, s, test=90.0 + s / 100, train=95.0, loss=0.1, grad_ratio=0.1, lesion_single=80.0)
            for d in (8, 20) for r in (True, False) for s in (0, 1)]
    v = {x.claim.split(".")[0]: x.verdict for x in report.verdicts(report.aggregate(same))}
    assert v == {"1": "not supported", "2": "not supported", "3": "not supported", "4": "not supported", "5": "not supported"}


def test_verdicts_mixed_and_noise() -> None:
    runs = []
    for s in (0, 1):
        runs += [fake_run(8, True, s, test=92.0, train=96.0, loss=0.1, grad_ratio=0.1, lesion_single=91.0),
                 fake_run(8, False, s, test=90.0, train=96.5, loss=0.1, grad_ratio=0.1, lesion_single=50.0),
                 fake_run(20, True, s, test=85.0 + s / 2, train=96.0, loss=0.1, grad_ratio=0.1, lesion_single=50.0),
                 fake_run(20, False, s, test=89.0, train=96.0, loss=0.1, grad_ratio=0.1, lesion_single=80.0),
                 # a 3-point spread over seeds swamps a 1-point difference
                 fake_run(56, True, s, test=88.0 + 3 * s, train=96.0, loss=0.1, grad_ratio=0.1, lesion_single=50.0),
                 fake_run(56, False, s, test=88.5, train=96.0, loss=0.1, grad_ratio=0.1, lesion_single=80.0)]
    v = {x.claim.split(".")[0]: x for x in report.verdicts(report.aggregate(runs))}
    assert v["2"].verdict == "mixed"  # better at 8, worse at 20, within the noise at 56
    assert "8: +2.00 (noise 0.20); 20: -3.75 (noise 0.50); 56: +1.00 (noise 3.00)" in v["2"].evidence
    assert v["4"].verdict == "not supported"  # at the deepest depth the residual twin loses more


def test_a_twin_at_chance_is_not_lesioned() -> None:
    run = fake_run(20, False, 0, test=10.5, train=10.0, loss=2.3, grad_ratio=0.0, lesion_single=10.0)
    assert math.isnan(report.single_drop(run["lesion"], 10.0))
    good = fake_run(20, True, 0, test=90.0, train=95.0, loss=0.1, grad_ratio=0.0, lesion_single=70.0)
    assert report.single_drop(good["lesion"], 10.0) == pytest.approx(25.0)  # 20 of the 80 points above chance


def test_report_is_generated_with_figures_and_other_domains_listed(tmp_path: Path) -> None:
    runs_dir = tmp_path / "results" / "image" / "runs"
    runs_dir.mkdir(parents=True)
    for r in textbook(0):
        (runs_dir / f"{r['depth']}-{r['residual']}.json").write_text(json.dumps(r))
    md = report.write_report(tmp_path / "results", tmp_path / "docs" / "residual-study.md")
    text = md.read_text()
    for name in ("accuracy-vs-depth", "train-loss", "gradient-init", "lesion", "gradient-correlation"):
        png = tmp_path / "docs" / "img" / "residual-study" / f"image-{name}.png"
        assert png.read_bytes()[:4] == b"\x89PNG" and f"](img/residual-study/image-{name}.png)" in text
    assert "#### 3. Makes much deeper networks trainable: **supported**" in text
    assert "| text | not measured yet | the sweep's runs: `scripts/residual_study.py text` |" in text
    assert "| gan | not measured yet | the sweep's runs: `scripts/residual_study.py gan` |" in text
    assert "nan" not in text.lower().replace("nanoseconds", "")
    with pytest.raises(SystemExit, match="no results"):
        report.write_report(tmp_path / "empty", tmp_path / "x.md")


# --------------------------------------------------------------------------- text and speech sweeps (one runner)

import residual_domains as domains  # noqa: E402

RECORD_FIELDS = {"study", "domain", "dataset", "name", "arch", "arch_args", "depth", "residual", "seed", "params", "classes",
                 "blocks", "recipe", "data", "steps", "warmup_steps", "train_loss_curve", "epoch_seconds", "final",
                 "gradient_flow", "branch_ratio", "gradient_correlation", "lesion", "domain_measures", "precision",
                 "device", "torch", "python", "wall_seconds", "finished"}


def tiny_text_sweep() -> domains.TextSweep:
    words = {"card": ["my card has not arrived", "where is my new card", "card still not here"],
             "refund": ["i want my money back", "refund my last payment please", "how do i get a refund"],
             "pin": ["i forgot my pin", "change my pin number", "my pin is blocked"]}
    train = [(label, f"{text} {k}") for label, texts in words.items() for text in texts for k in range(4)]  # 36 rows
    test = [(label, text) for label, texts in words.items() for text in texts]
    recipe = domains.TextRecipe(epochs=1, batch_size=36, hidden=16, heads=2, ffn=32, max_length=8, min_count=1,
                                lesion_samples=9, lesion_ks=(1, 2), lesion_trials=1, flow_samples=8)
    return domains.TextSweep(recipe, rows=(train, test))


def tiny_speech_sweep() -> domains.SpeechSweep:
    gen = torch.Generator().manual_seed(0)
    items = [{"feats": torch.randn(int(torch.randint(24, 40, (), generator=gen)), 80, generator=gen), "digit": digit,
              "speaker": speaker, "index": index}
             for digit in range(10) for speaker in (0, 1) for index in (0, 5)]  # speaker 0 is george, held out
    recipe = domains.SpeechRecipe(epochs=1, batch_size=10, lesion_samples=8, lesion_ks=(1, 2), lesion_trials=1,
                                  flow_samples=8, correlation_frames=20)
    return domains.SpeechSweep(recipe, items=items)


def _check_records(paths: list[Path], sweep: Any, depth: int, blocks: int) -> list[dict[str, Any]]:
    records = [json.loads(p.read_text()) for p in paths]
    assert [p.name for p in paths] == [f"{sweep.run_id(depth, r, 0)}.json" for r in (True, False)]
    for rec, residual in zip(records, (True, False)):
        assert set(rec) == RECORD_FIELDS and rec["domain"] == sweep.domain and rec["residual"] is residual
        assert rec["depth"] == depth and rec["seed"] == 0 and rec["blocks"] == blocks and rec["arch_args"]["residual"] is residual
        assert rec["steps"] == 1 and len(rec["train_loss_curve"]) == 1 and rec["train_loss_curve"][0] > 0
        assert {"train_acc", "test_acc", "train_loss", "test_loss", "train_samples", "test_samples"} <= set(rec["final"])
        for when in ("init", "end"):
            flow = rec["gradient_flow"][when]
            assert len(flow["input_grad_norm"]) == blocks and all(g > 0 for g in flow["input_grad_norm"])
            assert len(rec["branch_ratio"][when]["ratio"]) == blocks
        assert rec["lesion"]["removal"] == (["shortcut"] if residual else ["identity"]) * blocks
        assert rec["lesion"]["candidates"] == rec["gradient_flow"]["init"]["blocks"]  # every block keeps its shape
        assert rec["wall_seconds"]["total"] >= rec["wall_seconds"]["train"] > 0
    # the twins differ only by the skips: same parameter count, different training
    assert records[0]["params"] == records[1]["params"] and records[0]["train_loss_curve"] != records[1]["train_loss_curve"]
    return records


def test_text_sweep_smoke_writes_complete_records_and_keeps_them(tmp_path: Path) -> None:
    sweep = tiny_text_sweep()
    paths = study.run_sweep(sweep, [2], [0], tmp_path)
    records = _check_records(paths, sweep, 2, 4)  # 2 layers x (attention, feed-forward)
    res, plain = records
    assert res["final"]["train_samples"] == 36 and res["final"]["test_samples"] == 9 and res["classes"] == 3
    for rec in records:  # token ids: measured through the word embeddings
        assert [len(rec["gradient_correlation"][w]["correlation"]) for w in ("init", "end")] == [5, 5]
    for rec in records:
        assert len(rec["domain_measures"]["init"]["token_residual_by_layer"]) == 2
    # Dong et al.: at BERT's initialisation a plain encoder's token states collapse to one vector, a residual one's do not
    assert plain["domain_measures"]["init"]["token_residual_by_layer"][-1] < 0.05
    assert res["domain_measures"]["init"]["token_residual_by_layer"][-1] > 0.3
    before = [p.read_text() for p in paths]
    assert study.run_sweep(sweep, [2], [0], tmp_path) == paths and [p.read_text() for p in paths] == before  # kept, not redone


def test_speech_sweep_smoke_tests_on_the_unseen_speaker(tmp_path: Path) -> None:
    sweep = tiny_speech_sweep()
    data = sweep.load()
    assert len(data.train) == 10 and len(data.test) == 20 and data.extra["train_speakers"] == ["jackson"]
    paths = study.run_sweep(sweep, [3], [0], tmp_path)
    records = _check_records(paths, sweep, 3, 3)
    for rec in records:
        assert rec["final"]["test_samples"] == 20 and rec["data"]["heldout_speaker"] == "george"
        assert rec["arch"] == "tdnn_small" and rec["arch_args"]["channels"] == [64, 64, 64, 64, 192]
        assert len(rec["gradient_correlation"]["end"]["correlation"]) > 0 and rec["domain_measures"] is None


def test_tdnn_depths_and_masked_batches() -> None:
    args = domains.tdnn_args(12, False)
    assert args["dilations"] == [1] + [2, 3, 4] * 4 + [1] and len(args["channels"]) == 14 and args["residual"] is False
    sweep = tiny_speech_sweep()
    data = sweep.load()
    model, _, _ = sweep.build(data, 3, True)
    model.eval()
    # eval batches: sorted by length, cut to the longest; frame counts become the TDNN's relative lengths
    (inputs, _), = list(sweep.eval_batches(data.test.take(slice(0, 4))))
    frames = inputs["frames"]
    assert frames.tolist() == sorted(frames.tolist()) and inputs["feats"].shape[1] == int(frames.max())
    batched = model(**inputs)
    assert torch.equal(batched, model.model(inputs["feats"], frames / frames.max()))
    # the longest recording has no padding: its output is the unpadded one (others differ at the convolutions' edges)
    assert torch.allclose(batched[-1], model(inputs["feats"][-1:])[0], atol=1e-5)


def test_report_has_a_section_per_measured_domain_and_lists_what_was_not_run(tmp_path: Path) -> None:
    results = tmp_path / "results"
    for r in textbook(0):
        study.write_json(r, results / "image" / "runs" / f"{r['depth']}-{r['residual']}.json")
    study.run_sweep(tiny_text_sweep(), [2], [0], results / "text")
    md = report.write_report(results, tmp_path / "docs" / "residual-study.md").read_text()
    assert "## Text: Transformer encoders from scratch on BANKING77" in md and "## Speech" not in md
    assert "| speech | not measured yet |" in md and "| text | not measured yet" not in md
    assert ("**Not run** (no result; nothing is extrapolated): 2 layers residual seed 1; 2 layers plain seed 1; "
            "2 layers residual seed 2; 2 layers plain seed 2; 6 layers residual seed 0;") in md
    for name in ("accuracy-vs-depth", "train-loss", "gradient-init", "lesion", "rank-collapse"):
        assert f"](img/residual-study/text-{name}.png)" in md
    assert "](img/residual-study/text-gradient-correlation.png)" in md  # through the word embeddings
    assert md.count("#### ") == 10  # five verdicts per domain


# --------------------------------------------------------------------------- RL and GAN sweeps

import residual_gan as gan_sweep  # noqa: E402
import residual_report_rl_gan as rl_gan_report  # noqa: E402
import residual_rl as rl_sweep  # noqa: E402

TINY_RL = rl_sweep.RLRecipe(timesteps=300, eval_episodes=1, train_window=1, probe_transitions=32, lesion_episodes=1,
                            lesion_ks=(1,), lesion_trials=1, log_every=100)


def test_rl_sweep_smoke_trains_both_twins_and_keeps_them(tmp_path: Path) -> None:
    pytest.importorskip("stable_baselines3")
    paths = rl_sweep.run_sweep(TINY_RL, [2], [0], tmp_path)
    records = [json.loads(p.read_text()) for p in paths]
    assert [p.name for p in paths] == ["pendulum-simba2-residual-seed0.json", "pendulum-simba2-plain-seed0.json"]
    for rec, residual in zip(records, (True, False)):
        assert rec["domain"] == "rl" and rec["residual"] is residual and rec["arch_args"]["residual"] is residual
        assert rec["arch_args"]["depth"] == rec["arch_args"]["critic_depth"] == 2 and rec["blocks"] == 4  # critic + actor
        assert rec["steps"] == 300 and rec["episode_returns"] and rec["episode_returns"][0][0] == 200  # Pendulum: 200 steps
        assert rec["critic_loss_curve"] and all(v > 0 for _, v in rec["critic_loss_curve"])
        f = rec["final"]
        assert len(f["test_returns"]) == 1 and f["test_return"] == f["test_returns"][0] < 0 and f["random_policy_return"] < 0
        for key in ("gradient_flow", "actor_gradient_flow"):
            for when in ("init", "end"):
                assert len(rec[key][when]["input_grad_norm"]) == 2 and all(g > 0 for g in rec[key][when]["input_grad_norm"])
        assert rec["lesion"]["removal"] == (["shortcut"] if residual else ["identity"]) * 2
        assert len(rec["lesion"]["single"]) == 2 and rec["lesion"]["chance"] == f["random_policy_return"]
        assert len(rec["gradient_correlation"]["end"]["correlation"]) == 5 and rec["alpha"]["init"] == 1.0
    assert records[0]["params"] == records[1]["params"] and records[0]["final"] != records[1]["final"]
    before = [p.read_text() for p in paths]
    assert rl_sweep.run_sweep(TINY_RL, [2], [0], tmp_path) == paths and [p.read_text() for p in paths] == before


def test_the_rl_probe_and_random_policy_are_seeded() -> None:
    pytest.importorskip("gymnasium")
    a, b = (rl_sweep.random_transitions("Pendulum-v1", 210, 5) for _ in range(2))
    assert all(torch.equal(a[k], b[k]) for k in a) and a["obs"].shape == (210, 3) and a["action"].abs().max() <= 1
    assert torch.equal(a["obs"][1:200], a["next_obs"][:199])  # one episode until the time limit at 200 steps
    assert rl_sweep.episode_returns(None, "Pendulum-v1", 2, 7) == rl_sweep.episode_returns(None, "Pendulum-v1", 2, 7)


TINY_GAN = gan_sweep.GanRecipe(iters=3, batch=8, fd_samples=40, accuracy_per_class=2, flow_samples=8, lesion_ks=(1,),
                               lesion_trials=1)


def _tiny_gan_data(classifier: torch.nn.Module) -> dict[str, Any]:
    from reszoo.gan.metrics import classifier_outputs

    gen = torch.Generator().manual_seed(0)
    images = torch.rand(64, 1, 28, 28, generator=gen)
    feats, _ = classifier_outputs(classifier, images[:40])
    other, _ = classifier_outputs(classifier, images[24:])
    return {"train": images * 2 - 1, "train_labels": torch.arange(64) % 10, "test_features": feats,
            "train_features": other, "fd_real": 0.5}


def test_gan_sweep_smoke_records_both_networks() -> None:
    classifier = reszoo.load("resnet-mnist")
    data = _tiny_gan_data(classifier)
    records = [gan_sweep.train_twin(TINY_GAN, data, classifier, 2, r, 0) for r in (True, False)]
    for rec, residual in zip(records, (True, False)):
        assert rec["domain"] == "gan" and rec["residual"] is residual and rec["blocks"] == 4 and rec["d_blocks"] == 8
        assert rec["arch_args"]["stage_blocks"] == 2 and rec["steps"] == 3 and rec["d_loss_curve"] == []  # < 100 iterations
        f = rec["final"]
        assert 0 <= f["class_accuracy"] <= 100 and f["fd_test"] > 0 and f["fd_gap"] == pytest.approx(f["fd_test"] - f["fd_train"])
        assert len(rec["gradient_flow"]["init"]["input_grad_norm"]) == 4 and len(rec["d_gradient_flow"]["end"]["input_grad_norm"]) == 8
        # the up-blocks change shape: only each stage's second block can be removed by both twins
        assert rec["lesion"]["candidates"] == ["blocks.1", "blocks.3"] and rec["lesion"]["samples"] == 20
        assert rec["gradient_correlation"]["init"]["points"] == 32
    assert records[0]["params"] > records[1]["params"]  # the residual generator's learned 1x1 shortcuts
    again = gan_sweep.train_twin(TINY_GAN, data, classifier, 2, True, 0)
    assert _without_times(again) == _without_times(records[0])


def test_deeper_sngan_stages_keep_resolution_and_shortcuts() -> None:
    from reszoo.gan.models import sngan_d28, sngan_g28

    G = sngan_g28(ch=4, num_classes=10, stage_blocks=3)
    assert [b.upsample for b in G.blocks] == [True, False, False] * 2 and G.resolution == 28
    assert [b.shortcut is None for b in G.blocks] == [False, True, True] * 2  # identity where the shape is kept
    D = sngan_d28(ch=4, num_classes=10, stage_blocks=2)
    assert [b.downsample for b in D.blocks] == [True, False, True, False, False, False, False, False]
    assert G(torch.randn(2, 128), torch.tensor([1, 2])).shape == (2, 1, 28, 28)
    plain = sngan_g28(ch=4, num_classes=10, stage_blocks=3, residual=False)
    assert set(plain.state_dict()) == {k for k in G.state_dict() if ".shortcut." not in k}
    assert list(sngan_g28(ch=4).state_dict()) == list(sngan_g28(ch=4, stage_blocks=1).state_dict())
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="stage_blocks"):
            sngan_g28(stage_blocks=bad)


def fake_rl_run(depth: int, residual: bool, seed: int, *, test: float, train: float, grad_ratio: float,
                lesion_single: float) -> dict[str, Any]:
    grads = [10 ** (grad_ratio * (1 - i / max(1, depth - 1))) for i in range(depth)]
    names = [f"blocks.{i}" for i in range(depth)]
    flow = {"init": {"input_grad_norm": grads}, "end": {"input_grad_norm": grads}}
    return {"depth": depth, "residual": residual, "seed": seed, "params": 100 * depth,
            "final": {"test_return": test, "train_return": train}, "gradient_flow": flow, "actor_gradient_flow": flow,
            "gradient_correlation": {"init": {"correlation": [0.9]}, "end": {"correlation": [0.8]}},
            "lesion": {"baseline": test, "blocks": names, "candidates": names, "single": [lesion_single] * depth,
                       "random": [{"k": 1, "mean": lesion_single}], "chance": -1200.0},
            "wall_seconds": {"total": 10.0}}


def test_rl_verdicts_follow_simbas_picture_and_say_what_is_not_tested() -> None:
    runs = []
    for s in (0, 1):
        for d, plain in ((1, -150.0), (2, -160.0), (4, -400.0)):
            runs.append(fake_rl_run(d, True, s, test=-140.0 - s, train=-145.0 + s, grad_ratio=0.2, lesion_single=-300.0))
            runs.append(fake_rl_run(d, False, s, test=plain - s, train=plain, grad_ratio=1.5 if d == 4 else 0.3,
                                    lesion_single=-1100.0))
    v = {x.claim.split(".")[0]: x for x in rl_gan_report.rl_verdicts(rl_gan_report.aggregate(runs, "rl"))}
    assert [v[k].verdict for k in "12345"] == ["supported", "supported", "supported", "supported", "not tested"]
    assert "1: +10.00 (noise 10.00); 2: +20.00" in v["2"].evidence  # within the noise at 1 block, a win at 2 and 4
    assert "best − deepest (4): plain 250.00, residual 0.00" in v["3"].evidence


def test_gan_verdicts_use_fd_and_compare_gaps_only_at_comparable_fits() -> None:
    def run(depth: int, residual: bool, seed: int, fd: float, gap: float) -> dict[str, Any]:
        r = fake_rl_run(depth, residual, seed, test=0.0, train=0.0, grad_ratio=0.1, lesion_single=80.0)
        r["final"] = {"fd_test": fd, "fd_train": fd - gap, "fd_gap": gap, "class_accuracy": 95.0}
        r["d_gradient_flow"] = r.pop("actor_gradient_flow")
        r["lesion"]["baseline"] = 95.0
        return r

    runs = [run(1, True, s, 0.5, 0.05) for s in (0, 1)] + [run(1, False, s, 0.6, 0.15) for s in (0, 1)]
    runs += [run(2, True, s, 0.5, 0.05) for s in (0, 1)] + [run(2, False, s, 5.0, 0.01) for s in (0, 1)]
    v = {x.claim.split(".")[0]: x for x in rl_gan_report.gan_verdicts(rl_gan_report.aggregate(runs, "gan"))}
    assert v["2"].verdict == "supported" and "1: +0.10 (noise 0.02); 2: +4.50 (noise 0.02)" in v["2"].evidence
    assert v["3"].verdict == "supported"  # plain FD 0.6 -> 5.0, residual holds at 0.5
    assert v["5"].verdict == "supported" and "2:" not in v["5"].evidence  # 5.0 vs 0.5: not comparable fits
    assert v["1"].verdict == "not supported" and v["4"].verdict == "not supported"  # same gradients, same lesions


def test_report_adds_rl_and_gan_sections_and_a_summary(tmp_path: Path) -> None:
    pytest.importorskip("stable_baselines3")
    results = tmp_path / "results"
    for r in textbook(0):
        study.write_json(r, results / "image" / "runs" / f"{r['depth']}-{r['residual']}.json")
    rl_sweep.run_sweep(TINY_RL, [1], [0], results / "rl")
    classifier = reszoo.load("resnet-mnist")
    data = _tiny_gan_data(classifier)
    for residual in (True, False):
        rec = gan_sweep.train_twin(TINY_GAN, data, classifier, 1, residual, 0)
        study.write_json(rec, results / "gan" / "runs" / f"{gan_sweep.run_id(1, residual, 0)}.json")
    md = report.write_report(results, tmp_path / "docs" / "residual-study.md").read_text()
    assert "## RL: SimBa agents with SAC on Pendulum-v1" in md and "## GAN: SNGAN on MNIST" in md
    assert "| claim | image (ResNet, Fashion-MNIST) | RL (SimBa SAC, Pendulum) | GAN (SNGAN, MNIST) |" in md
    assert "| 5. Reduces overfitting (train − test gap) | not supported | not tested |" in md
    for name in ("metric-vs-depth", "learning-curves", "gradient-init", "gradient-correlation"):
        for domain in ("rl", "gan"):
            assert f"](img/residual-study/{domain}-{name}.png)" in md
    assert "gan-lesion.png" not in md  # 1 block per stage: no generator block keeps its shape
    assert "#### 4. Improves information flow (lesion): **not tested**" in md.split("## GAN")[1]
    assert "| text | not measured yet |" in md and "| rl | not measured yet" not in md
    assert md.count("#### ") == 15 and "nan" not in md.lower()
