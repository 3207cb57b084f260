"""A tiny random LLaMA folder in Hugging Face layout, with the real SmolLM2 tokenizer, for fast adapter tests."""

import shutil

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def make_tiny_llama_folder(folder, tokenizer_folder, max_positions: int = 64, seed: int = 0):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    return save_with_tokenizer(LlamaForCausalLM(config).eval(), folder, tokenizer_folder)


def make_tiny_gemma3_folder(folder, tokenizer_folder, max_positions: int = 256, seed: int = 0):
    """A tiny random Gemma 3 (one sliding-window layer, one global) with the real Gemma 3 tokenizer, which adds BOS."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    config = Gemma3TextConfig(vocab_size=262144, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=16,
                              layer_types=["sliding_attention", "full_attention"],
                              max_position_embeddings=max_positions, query_pre_attn_scalar=16,
                              tie_word_embeddings=True, bos_token_id=2, eos_token_id=1, pad_token_id=0)
    return save_with_tokenizer(Gemma3ForCausalLM(config).eval(), folder, tokenizer_folder)


def save_with_tokenizer(model, folder, tokenizer_folder):
    """Saves a random model in Hugging Face layout with a real model's tokenizer files beside it."""
    with torch.no_grad():  # sharper distributions than the default init, so argmax ties cannot happen
        model.model.embed_tokens.weight.mul_(20)
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_folder / name, folder / name)
    return folder
