"""A tiny random LLaMA folder in Hugging Face layout, with the real SmolLM2 tokenizer, for fast adapter tests."""

import shutil

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def make_tiny_llama_folder(folder, tokenizer_folder, max_positions: int = 64, seed: int = 0):
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # sharper distributions than the default init, so argmax ties cannot happen
        model.model.embed_tokens.weight.mul_(20)
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_folder / name, folder / name)
    return folder
