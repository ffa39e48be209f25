"""A residual Transformer encoder (BERT family) in reszoo's own code.

One configurable class, :class:`TextEncoder`; the named architectures are data
(:data:`ENCODER_CONFIGS`). Each of the ``2 * num_layers`` sublayers (self-attention,
feed-forward) is a :class:`SublayerResidual`, a :class:`reszoo.nn.ResidualBlock`:

* post-LN (BERT, the default): ``y = LayerNorm(x + Dropout(F(x)))``
* pre-LN (``norm="pre"``):     ``y = x + Dropout(F(LayerNorm(x)))``, plus a final LayerNorm

and the plain twin (``residual=False``) drops the ``x +``. Heads: token states
(:meth:`TextEncoder.forward_features`), a pooled sentence embedding (mean over the attention
mask, ``[CLS]``, or BERT's tanh pooler; optional L2 norm), sequence classification
(``num_classes``) and BERT's masked-LM head (``mlm_head=True``, decoder tied to the word
embeddings). Attention runs through ``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._batching import by_length
from ..domains import Registry
from ..nn import ResidualBlock

__all__ = [
    "ENCODER_CONFIGS",
    "EncoderConfig",
    "FeedForward",
    "SelfAttention",
    "SublayerResidual",
    "EncoderLayer",
    "TextEmbeddings",
    "TextEncoder",
    "archs",
    "build_encoder",
]

# Every architecture of the domain, registered where it is defined (registry entries name them in ``arch``).
archs: Registry[Callable[..., nn.Module]] = Registry("architecture")

POOLINGS = ("mean", "cls", "pooler")
NORMS = ("post", "pre")


@dataclass(frozen=True)
class EncoderConfig:
    """Sizes of a BERT-style encoder (the names of transformers' ``BertConfig`` in brackets)."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12  # num_hidden_layers
    num_heads: int = 12  # num_attention_heads
    intermediate_size: int = 3072
    max_position: int = 512  # max_position_embeddings
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1  # hidden_dropout_prob
    attention_dropout: float = 0.1  # attention_probs_dropout_prob
    pad_token_id: int = 0


# Architecture as data: a named config per published shape.
ENCODER_CONFIGS: dict[str, EncoderConfig] = {
    "bert_base": EncoderConfig(),
    "bert_large": EncoderConfig(hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096),
    # nreimers/MiniLM-L6-H384-uncased, the backbone of sentence-transformers/all-MiniLM-L6-v2
    "minilm_l6_h384": EncoderConfig(hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536),
    "minilm_l12_h384": EncoderConfig(hidden_size=384, num_layers=12, num_heads=12, intermediate_size=1536),
}


class TextEmbeddings(nn.Module):
    """Token + position + segment embeddings, then LayerNorm and dropout (as in BERT)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position = nn.Embedding(cfg.max_position, cfg.hidden_size)
        self.segment = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        # Not in checkpoints (persistent=False): rebuilt by init_non_persistent_buffers after a meta build.
        self.register_buffer("position_ids", torch.arange(cfg.max_position), persistent=False)

    def init_non_persistent_buffers(self) -> None:
        device = self.position.weight.device
        self.position_ids = torch.arange(self.position.num_embeddings, device=device)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        length = input_ids.shape[1]
        if length > self.position.num_embeddings:
            raise ValueError(f"sequence of {length} tokens is longer than the {self.position.num_embeddings} positions "
                             "this model has; truncate the input (the tokenizer's max_length)")
        x = self.word(input_ids) + self.position(self.position_ids[:length])
        if token_type_ids is None:
            x = x + self.segment.weight[0]  # all segment A: same numbers as a lookup of zeros, without the gather
        else:
            x = x + self.segment(token_type_ids)
        return self.dropout(self.norm(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused q/k/v projection and an output projection."""

    def __init__(self, hidden_size: int, num_heads: int, attention_dropout: float = 0.0) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.attention_dropout = attention_dropout
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        batch, length, hidden = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attention_dropout if self.training else 0.0
        )
        return self.proj(out.transpose(1, 2).reshape(batch, length, hidden))


class FeedForward(nn.Module):
    """Position-wise ``fc2(gelu(fc1(x)))`` (exact erf GELU, as BERT's ``hidden_act="gelu"``)."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SublayerResidual(ResidualBlock):
    """A Transformer sublayer ``fn`` with its dropout, LayerNorm and residual connection.

    Post-LN normalises after the join (BERT); pre-LN normalises the branch input and leaves the
    residual stream untouched. The plain twin keeps the LayerNorm and drops the addition.
    """

    def __init__(self, fn: nn.Module, hidden_size: int, *, pre_norm: bool = False, dropout: float = 0.1,
                 layer_norm_eps: float = 1e-12, residual: bool = True) -> None:
        super().__init__(residual)
        self.fn = fn
        self.norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, x: Tensor, *args: Any) -> Tensor:
        if self.pre_norm:
            return self.join(self.dropout(self.fn(self.norm(x), *args)), x)
        return self.norm(self.join(self.dropout(self.fn(x, *args)), x))

    def extra_repr(self) -> str:
        return f"residual={self.residual}, norm={'pre' if self.pre_norm else 'post'}"


class EncoderLayer(nn.Module):
    """Self-attention sublayer, then feed-forward sublayer: two residual blocks."""

    def __init__(self, cfg: EncoderConfig, *, pre_norm: bool, residual: bool) -> None:
        super().__init__()
        common = dict(pre_norm=pre_norm, dropout=cfg.dropout, layer_norm_eps=cfg.layer_norm_eps, residual=residual)
        self.attn = SublayerResidual(SelfAttention(cfg.hidden_size, cfg.num_heads, cfg.attention_dropout),
                                     cfg.hidden_size, **common)
        self.ffn = SublayerResidual(FeedForward(cfg.hidden_size, cfg.intermediate_size), cfg.hidden_size, **common)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        return self.ffn(self.attn(x, attn_mask))


class MaskedLMHead(nn.Module):
    """BERT's MLM head: dense + GELU + LayerNorm, then the (tied) word-embedding decoder + bias."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def reset_parameters(self) -> None:  # a head added on the meta device is initialised here
        nn.init.zeros_(self.bias)

    def forward(self, states: Tensor, word_embeddings: Tensor) -> Tensor:
        return F.linear(self.norm(F.gelu(self.dense(states))), word_embeddings, self.bias)


class TextEncoder(nn.Module):
    """A BERT-style residual Transformer encoder with sentence, classification or MLM output.

    ``forward(input_ids, attention_mask=None, token_type_ids=None)`` returns, by configuration:
    class logits ``[B, num_classes]`` when ``num_classes`` is set; else MLM logits
    ``[B, L, vocab]`` when ``mlm_head``; else the sentence embedding ``[B, hidden]``.
    ``forward_features`` gives the token states ``[B, L, hidden]`` in every case.
    """

    # What the fast path (reszoo.optimize) runs in bfloat16 and compiles: encode and predict call forward_features.
    fast_methods = ("forward", "forward_features")

    head_prefixes: tuple[str, ...] = ("head.",)

    def __init__(
        self,
        cfg: EncoderConfig = EncoderConfig(),
        *,
        residual: bool = True,
        norm: str = "post",
        pooling: str = "mean",
        normalize: bool = False,
        pooler: bool = True,
        num_classes: int | None = None,
        classifier_dropout: float | None = None,
        mlm_head: bool = False,
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if pooling == "pooler" and not pooler:
            raise ValueError("pooling='pooler' needs pooler=True")
        self.cfg = cfg
        # The constructor's options, to rebuild this architecture (e.g. with another head).
        self.options = dict(residual=residual, norm=norm, pooling=pooling, normalize=normalize, pooler=pooler,
                            num_classes=num_classes, classifier_dropout=classifier_dropout, mlm_head=mlm_head)
        self.residual = residual
        self.pooling = pooling
        self.normalize = normalize
        self.num_classes = num_classes
        self.embed_dim = cfg.hidden_size

        self.embeddings = TextEmbeddings(cfg)
        self.layers = nn.ModuleList(
            EncoderLayer(cfg, pre_norm=norm == "pre", residual=residual) for _ in range(cfg.num_layers)
        )
        # Pre-LN leaves the residual stream unnormalised: one LayerNorm after the last block.
        self.final_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps) if norm == "pre" else nn.Identity()
        # BERT's pooler (tanh(dense([CLS]))): kept so BERT checkpoints load strictly; used by pooling="pooler".
        self.pooler = nn.Linear(cfg.hidden_size, cfg.hidden_size) if pooler else None
        self.mlm = MaskedLMHead(cfg) if mlm_head else None
        if num_classes is not None:
            if num_classes < 1:
                raise ValueError(f"num_classes must be >= 1, got {num_classes}")
            self.head_drop = nn.Dropout(cfg.dropout if classifier_dropout is None else classifier_dropout)
            self.head = nn.Linear(cfg.hidden_size, num_classes)
        else:
            self.head_drop, self.head = None, None
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # BERT's initialisation, as in transformers: N(0, 0.02) weights, zero biases, unit LayerNorms.
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.Embedding) and module.padding_idx is not None and not module.weight.is_meta:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def init_non_persistent_buffers(self) -> None:
        """Recompute ``position_ids`` after a meta-device build filled with ``assign=True``."""
        self.embeddings.init_non_persistent_buffers()

    def with_classifier(self, num_classes: int, classifier_dropout: float | None = None) -> TextEncoder:
        """A new model: this encoder's weights (copied) and a fresh ``num_classes`` classifier in place
        of any head (classifier or masked LM); ``preprocess`` is shared."""
        options = {**self.options, "num_classes": num_classes, "mlm_head": False,
                   "classifier_dropout": classifier_dropout}
        with torch.device(self.embeddings.word.weight.device):
            new = TextEncoder(self.cfg, **options)
        new.to(self.embeddings.word.weight.dtype)
        heads = ("head.", "mlm.")
        state = {k: v for k, v in self.state_dict().items() if not k.startswith(heads)}
        missing, unexpected = new.load_state_dict(state, strict=False)
        if unexpected or not all(k.startswith("head.") for k in missing):  # an internal invariant
            raise RuntimeError(f"with_classifier: unexpected {unexpected}, missing {missing}")
        if hasattr(self, "preprocess"):
            new.preprocess = self.preprocess
        return new

    # ------------------------------------------------------------------ forward

    def get_input_embeddings(self) -> nn.Embedding:
        """The word embedding (Hugging Face's name): what ``reszoo.analysis.gradient_correlation`` moves
        token inputs through."""
        return self.embeddings.word

    def forward_features(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                         token_type_ids: Tensor | None = None) -> Tensor:
        """Token states ``[B, L, hidden]`` (padding positions hold values; mask them out)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
        x = self.embeddings(input_ids, token_type_ids)
        attn_mask = None
        # No mask when nothing is padded: SDPA then takes its fastest path; results are the same.
        # A traced or exported graph keeps the mask always: that test is data-dependent, so a trace
        # would freeze its outcome for the example batch (and torch.export/ONNX refuse it).
        if attention_mask is not None and (_tracing() or not bool(attention_mask.all())):
            attn_mask = attention_mask[:, None, None, :].bool()
        for layer in self.layers:
            x = layer(x, attn_mask)
        return self.final_norm(x)

    def pool(self, states: Tensor, attention_mask: Tensor | None = None, *, normalize: bool | None = None) -> Tensor:
        """Sentence embedding ``[B, hidden]`` from token states, by ``self.pooling``."""
        if self.pooling == "cls":
            out = states[:, 0]
        elif self.pooling == "pooler":
            out = torch.tanh(self.pooler(states[:, 0]))
        elif attention_mask is None:
            out = states.mean(1)
        else:
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            out = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        if self.normalize if normalize is None else normalize:
            out = F.normalize(out, p=2, dim=-1)
        return out

    def forward_head(self, states: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        if self.head is not None:
            # The classifier sees the un-normalised pooled embedding (L2 norm would squash its logits).
            return self.head(self.head_drop(self.pool(states, attention_mask, normalize=False)))
        if self.mlm is not None:
            return self.mlm(states, self.embeddings.word.weight)
        return self.pool(states, attention_mask)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> Tensor:
        return self.forward_head(self.forward_features(input_ids, attention_mask, token_type_ids), attention_mask)

    # ------------------------------------------------------------------ text in, tensors out

    def _preprocess(self) -> Any:
        pre = getattr(self, "preprocess", None)
        if pre is None or not hasattr(pre, "tokenize"):
            raise RuntimeError("this model has no tokenizer: load it with reszoo.load(name), or set "
                               "model.preprocess = reszoo.text.TextPreprocess.from_file('tokenizer.json', max_length=...)")
        return pre

    def encode(self, texts: str | Sequence[str], batch_size: int = 32, *, normalize: bool | None = None,
               truncate: bool = True) -> Tensor:
        """Sentence embeddings ``[n, hidden]`` of ``texts`` (float32, on the model's device).

        Texts are tokenized once, sorted by length and batched so that each batch pads only to its
        own longest text; the result is in input order. Texts longer than the tokenizer's
        ``max_length`` are cut there (``truncate=False`` raises instead). ``normalize`` overrides
        the model's L2 normalisation.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        pre = self._preprocess()
        encodings = pre.tokenize(texts, truncate=truncate)
        batches = by_length(range(len(encodings)), [len(e.ids) for e in encodings], batch_size, longest_first=True)
        device = self.embeddings.word.weight.device
        out = torch.empty(len(encodings), self.embed_dim, dtype=torch.float32, device=device)
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                for idx in batches:
                    batch = pre.collate([encodings[i] for i in idx], device=device)
                    states = self.forward_features(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
                    emb = self.pool(states, batch["attention_mask"], normalize=normalize)
                    out[torch.tensor(idx, device=device)] = emb.float()
        finally:
            self.train(was_training)
        return out


def _tracing() -> bool:
    """Whether this forward is being traced (TorchScript) or compiled/exported (dynamo, torch.export, ONNX)."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def build_encoder(config: str | EncoderConfig, **kwargs: Any) -> TextEncoder:
    """A :class:`TextEncoder` from a named config (or a config), with size overrides in ``kwargs``
    (fields of :class:`EncoderConfig`) and model options (``residual``, ``norm``, ``pooling`` …)."""
    cfg = ENCODER_CONFIGS[config] if isinstance(config, str) else config
    size_fields = {k: kwargs.pop(k) for k in list(kwargs) if k in EncoderConfig.__dataclass_fields__}
    return TextEncoder(replace(cfg, **size_fields), **kwargs)


# --------------------------------------------------------------------------- architectures
# Keyword arguments go to TextEncoder (residual, norm, pooling, num_classes, mlm_head …) and
# override fields of the named EncoderConfig.


@archs.register
def bert_base(**kwargs: Any) -> TextEncoder:
    """BERT-base: 12 layers, hidden 768, 12 heads."""
    return build_encoder("bert_base", **kwargs)


@archs.register
def bert_large(**kwargs: Any) -> TextEncoder:
    """BERT-large: 24 layers, hidden 1024, 16 heads."""
    return build_encoder("bert_large", **kwargs)


@archs.register
def minilm_l6_h384(**kwargs: Any) -> TextEncoder:
    """MiniLM-L6-H384 (the backbone of all-MiniLM-L6-v2): 6 layers, hidden 384, 12 heads."""
    return build_encoder("minilm_l6_h384", **kwargs)


@archs.register
def minilm_l12_h384(**kwargs: Any) -> TextEncoder:
    """MiniLM-L12-H384: 12 layers, hidden 384, 12 heads."""
    return build_encoder("minilm_l12_h384", **kwargs)


@archs.register
def transformer_encoder(**kwargs: Any) -> TextEncoder:
    """Any size: ``hidden_size``, ``num_layers``, ``num_heads`` … (fields of EncoderConfig) plus model options."""
    return build_encoder(EncoderConfig(), **kwargs)
