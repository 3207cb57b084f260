"""LoRA adapters saved by PEFT, applied to our reference models: kept beside each layer or merged into it.

A LoRA adapter changes a linear layer y = W x + b into y = W x + b + s · B (A x), with A of shape (r, in),
B of shape (out, r) and the scaling s = alpha / r (alpha / sqrt(r) with use_rslora; Hu et al. 2021, Kalajdzievski
2023). Unmerged, each targeted nn.Linear is wrapped and A and B stay separate; merged, W += s · B @ A in place.

What we rely on in PEFT's folder format (`PeftModel.save_pretrained`, checked against peft 0.21):
  - adapter_config.json holds peft_type "LORA", r, lora_alpha, target_modules (a list of names, or one regex
    string), rank_pattern and alpha_pattern, use_rslora, fan_in_fan_out, and the options of the variants we refuse.
  - adapter_model.safetensors holds `base_model.model.<module path>.lora_A.weight` (r, in) and `.lora_B.weight`
    (out, r); the adapter name ("default") is stripped on save. The module path is the one in the transformers
    model, which our reference models reproduce.
  - when an embedding or output layer is targeted (or the vocabulary was resized), the file also holds a copy of
    that layer's base weight (`lm_head.base_layer.weight`, `model.embed_tokens.weight`), which PEFT loads into the
    model; we accept such a copy only when it equals the model's own weight.
  - lora_A and lora_B have nn.Linear's (out, in) layout even when fan_in_fan_out is true: that flag only says the
    base layer is a transformers Conv1D (GPT-2), whose weight is stored (in, out), so PEFT transposes B @ A before
    merging into it. Our models hold such layers as nn.Linear (out, in), so the flag needs no action here.
  - target_modules as a list selects a module whose full name equals an entry or ends with "." + entry; as a string
    it must match the full name (re.fullmatch). exclude_modules works the same way and wins.
  - a rank_pattern or alpha_pattern key applies to a module when re.match(rf"(.*\\.)?({key})$", name) succeeds;
    the first such key in the file's order wins, else the global r / lora_alpha.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from harness.errors import UserError

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
KEY_PREFIX = "base_model.model."
KEY_SUFFIXES = {".lora_A.weight": "A", ".lora_B.weight": "B"}

# Options that change what the adapter computes in ways we do not implement: refused whenever they are set.
UNSUPPORTED_OPTIONS = {
    "use_dora": "DoRA (use_dora)",
    "lora_bias": "a trained bias on lora_B (lora_bias)",
    "modules_to_save": "fully trained copies of modules (modules_to_save)",
    "trainable_token_indices": "trained token embeddings (trainable_token_indices)",
    "target_parameters": "LoRA on bare parameters (target_parameters)",
    "layer_replication": "layer replication (layer_replication)",
    "alora_invocation_tokens": "activated LoRA (alora_invocation_tokens)",
    "use_qalora": "QA-LoRA (use_qalora)",
    "use_bdlora": "block-diagonal LoRA (use_bdlora)",
    "arrow_config": "Arrow routing (arrow_config)",
    "velora_config": "VeLoRA (velora_config)",
    "monteclora_config": "MonteCLoRA (monteclora_config)",
    "kasa_config": "KaSA (kasa_config)",
}
# These initialisations also rewrite the base weights; an adapter saved without PEFT's conversion
# (path_initial_model_for_weight_conversion) is only right on top of that rewritten base model.
BASE_CHANGING_INITS = ("pissa", "olora", "corda", "loftq", "lora_ga")


def parse_lora_suffix(text: str) -> tuple[Path, bool]:
    """The part of a model spec after `+lora=`: `PATH` or `PATH,merge`."""
    path, comma, option = text.rpartition(",")
    if not comma:
        path, option = text, ""
    if option not in ("", "merge") or not path:
        raise UserError(f"malformed LoRA suffix {'+lora=' + text!r}: expected +lora=PATH or +lora=PATH,merge")
    return Path(path).expanduser(), option == "merge"


class LoraLinear(nn.Module):
    """An nn.Linear plus its LoRA path: base(x) + scaling · B(A(x)), with A and B kept apart."""

    def __init__(self, base: nn.Linear, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float):
        super().__init__()
        self.base = base  # kept as a child, so a later pass that swaps nn.Linear layers (quantization) still works
        self.lora_A = nn.Parameter(lora_A.to(base.weight), requires_grad=False)
        self.lora_B = nn.Parameter(lora_B.to(base.weight), requires_grad=False)
        self.scaling = scaling

    # Code that reads a layer's weight (our LLaMA takes the activation dtype from lm_head.weight) still finds it.
    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling

    def extra_repr(self) -> str:
        return f"r={self.lora_A.shape[0]}, scaling={self.scaling:g}"


@dataclass
class Change:
    """One layer's adapter, checked against the model and ready to apply."""
    name: str
    layer: nn.Linear
    lora_A: torch.Tensor
    lora_B: torch.Tensor
    scaling: float


def apply_lora(model: nn.Module, adapter_folder: Path, merge: bool = False) -> dict:
    """Applies a PEFT LoRA adapter to `model` (unmerged by default) and returns a report for the run record.

    Everything is checked before the model is touched: a UserError leaves the model exactly as it was.
    """
    folder = Path(adapter_folder)
    config = read_adapter_config(folder)
    weights, copies = read_adapter_weights(folder)
    check_copies(model, copies, folder)
    changes = plan_changes(model, config, weights, folder)
    if merge:
        refuse_shared_weights(model, changes, folder)
    weights_sha256 = file_sha256(folder / WEIGHTS_NAME)
    for change in changes:
        if merge:
            merge_into(change)
        else:
            wrap(model, change)
    return {
        "path": str(folder),
        "r": config["r"],
        "lora_alpha": config["lora_alpha"],
        "use_rslora": bool(config.get("use_rslora")),
        "rank_pattern": config.get("rank_pattern") or {},
        "alpha_pattern": config.get("alpha_pattern") or {},
        "targets": {"count": len(changes), "examples": [c.name for c in changes[:3]]},
        "merged": merge,
        "adapter_parameters": sum(c.lora_A.numel() + c.lora_B.numel() for c in changes),
        "sha256": weights_sha256,
    }


def read_adapter_config(folder: Path) -> dict:
    path = folder / CONFIG_NAME
    if not folder.is_dir():
        raise UserError(f"LoRA adapter {folder} is not a folder")
    if not path.is_file():
        raise UserError(f"LoRA adapter {folder} has no {CONFIG_NAME}: is it a PEFT adapter folder?")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"cannot read {path}: {error}") from None
    if not isinstance(config, dict):
        raise UserError(f"{path} is not a JSON object")
    if config.get("peft_type") != "LORA":
        raise UserError(f"{path}: peft_type is {config.get('peft_type')!r}; only LORA adapters are supported")
    for option, what in UNSUPPORTED_OPTIONS.items():
        if config.get(option):
            raise UserError(f"{path}: {what} is not supported")
    if config.get("bias", "none") != "none":
        raise UserError(f"{path}: bias={config['bias']!r} (trained base biases) is not supported; only 'none'")
    init = str(config.get("init_lora_weights", True)).lower()
    if init.startswith(BASE_CHANGING_INITS):
        raise UserError(f"{path}: init_lora_weights={config['init_lora_weights']!r} adapters need the base weights "
                        "PEFT rewrote; save it with path_initial_model_for_weight_conversion to use it here")
    for key, kind in (("r", int), ("lora_alpha", (int, float))):
        if not isinstance(config.get(key), kind) or isinstance(config.get(key), bool) or config[key] <= 0:
            raise UserError(f"{path}: {key} must be a positive number, not {config.get(key)!r}")
    if not isinstance(config.get("target_modules"), (str, list)):
        raise UserError(f"{path}: target_modules must be a list of names or a regex, "
                        f"not {config.get('target_modules')!r}")
    return config


def read_adapter_weights(folder: Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """({module path: {"A": lora_A, "B": lora_B}}, {parameter name: saved copy of a base weight}).

    PEFT adds copies of the embedding and output weights when they are targeted or the vocabulary was resized
    (`model.embed_tokens.weight`, `lm_head.base_layer.weight`); loading the adapter puts them in the model.
    """
    path = folder / WEIGHTS_NAME
    if not path.is_file():
        older = " (it has the older pickle adapter_model.bin; re-save with safe_serialization=True)"
        raise UserError(f"LoRA adapter {folder} has no {WEIGHTS_NAME}"
                        f"{older if (folder / 'adapter_model.bin').is_file() else ''}")
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError) as error:
        raise UserError(f"cannot read {path}: {error}") from None
    modules: dict[str, dict[str, torch.Tensor]] = {}
    copies: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        if not key.startswith(KEY_PREFIX):
            raise UserError(f"{path}: unexpected tensor {key!r}; PEFT's names begin with {KEY_PREFIX!r}")
        name = key[len(KEY_PREFIX):]
        suffix = next((s for s in KEY_SUFFIXES if name.endswith(s)), None)
        if suffix is None:
            copies[name.replace(".base_layer.", ".")] = tensor
        else:
            modules.setdefault(name[:-len(suffix)], {})[KEY_SUFFIXES[suffix]] = tensor
    for name, pair in modules.items():
        if set(pair) != {"A", "B"}:
            missing = "lora_B" if "A" in pair else "lora_A"
            raise UserError(f"{path}: {name} has no {missing}.weight")
    if not modules:
        raise UserError(f"{path} holds no LoRA weights")
    return modules, copies


def check_copies(model: nn.Module, copies: dict[str, torch.Tensor], folder: Path) -> None:
    """Saved copies of base weights are fine when they are the model's own; others would replace them: refused."""
    parameters = dict(model.named_parameters(remove_duplicate=False))  # a tied lm_head.weight too
    for name, copy in copies.items():
        if name not in parameters:
            raise UserError(f"{folder / WEIGHTS_NAME}: unexpected tensor {KEY_PREFIX + name!r}, which is neither "
                            f"lora_A/lora_B nor a weight of this model")
        own = parameters[name]
        if copy.shape != own.shape or not torch.equal(copy.to(own.dtype), own.detach().cpu()):
            raise UserError(f"LoRA adapter {folder} carries its own {name} {tuple(copy.shape)}, different from "
                            f"the model's {tuple(own.shape)} (a resized or retrained vocabulary?); not supported")


def plan_changes(model: nn.Module, config: dict, weights: dict, folder: Path) -> list[Change]:
    """Checks the adapter against the model, module by module; changes nothing."""
    where = f"LoRA adapter {folder}"
    modules = dict(model.named_modules())
    absent = [name for name in weights if name not in modules]
    if absent:
        raise UserError(f"{where} does not fit this model: it has no module {absent[0]} "
                        f"({len(absent)} of the adapter's {len(weights)} layers are missing)")
    targeted = [name for name in modules if name and is_targeted(config, name)]
    unweighted = [name for name in targeted if name not in weights]
    if unweighted:
        raise UserError(f"{where} does not fit this model: target_modules selects {unweighted[0]}, but the "
                        f"adapter has no weights for it ({len(unweighted)} such layers; made for a smaller model?)")
    untargeted = [name for name in weights if name not in targeted]
    if untargeted:
        raise UserError(f"{where}: weights for {untargeted[0]}, which its target_modules "
                        f"{config['target_modules']!r} does not select")

    changes = []
    for name in targeted:
        layer, lora_A, lora_B = modules[name], weights[name]["A"], weights[name]["B"]
        if not isinstance(layer, nn.Linear):
            raise UserError(f"{where}: {name} is a {type(layer).__name__}; LoRA is applied only to nn.Linear")
        out_features, in_features = layer.weight.shape
        r = pattern_value(config.get("rank_pattern") or {}, name, config["r"])
        alpha = pattern_value(config.get("alpha_pattern") or {}, name, config["lora_alpha"])
        if lora_A.shape != (r, in_features) or lora_B.shape != (out_features, r):
            raise UserError(f"{where} does not fit {name}: lora_A {tuple(lora_A.shape)} and lora_B "
                            f"{tuple(lora_B.shape)} (rank {r}) need ({r}, {in_features}) and "
                            f"({out_features}, {r}) for its weight (out, in) = {tuple(layer.weight.shape)}")
        scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
        changes.append(Change(name, layer, lora_A, lora_B, scaling))
    return changes


def is_targeted(config: dict, name: str) -> bool:
    """Whether PEFT would have put a LoRA layer on the module `name`, from target_modules and friends."""
    if matches_module_list(config.get("exclude_modules"), name):
        return False
    targets = config["target_modules"]
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    if not matches_module_list(targets, name):
        return False
    layers = config.get("layers_to_transform")
    if layers is None or layers == []:
        return True
    index = layer_index(name, config.get("layers_pattern"))
    return index is not None and (index == layers if isinstance(layers, int) else index in layers)


def matches_module_list(names, module: str) -> bool:
    """A regex string must match the whole name; a list entry must be the name or its last dotted parts."""
    if not names:
        return False
    if isinstance(names, str):
        return re.fullmatch(names, module) is not None
    return any(module == n or module.endswith("." + n) for n in names)


def layer_index(name: str, layers_pattern) -> int | None:
    """The block number in a name such as model.layers.3.mlp.down_proj: the first number after
    `<layers_pattern>.` when one is given, else the first dotted number that has a name before it."""
    if not layers_pattern:
        found = re.match(r".*?\.[^.]*\.(\d+)\.", name)
    else:
        patterns = [layers_pattern] if isinstance(layers_pattern, str) else layers_pattern
        found = next(filter(None, (re.match(rf"(?:^|.*?\.){p}\.(\d+)\.", name) for p in patterns)), None)
    return int(found.group(1)) if found else None


def pattern_value(patterns: dict, name: str, default):
    """A rank_pattern / alpha_pattern override: the first key that matches the end of the name at a dot."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", name):
            return value
    return default


def refuse_shared_weights(model: nn.Module, changes: list[Change], folder: Path) -> None:
    # A tied lm_head shares its weight with the token embedding: merging into it would change the embedding too.
    uses = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    for change in changes:
        if uses[id(change.layer.weight)] > 1:
            raise UserError(f"LoRA adapter {folder}: {change.name}'s weight is shared with another layer (tied "
                            "embeddings), so it cannot be merged; use +lora=PATH without ,merge")


def merge_into(change: Change) -> None:
    weight = change.layer.weight
    with torch.no_grad():
        # Sum in fp32 and round once, so a bf16 model loses no more than one rounding of its own weights.
        lora_A, lora_B = (t.to(weight.device, torch.float32) for t in (change.lora_A, change.lora_B))
        delta = change.scaling * (lora_B @ lora_A)
        weight.copy_((weight.float() + delta).to(weight.dtype))


def wrap(model: nn.Module, change: Change) -> None:
    parent_name, _, child_name = change.name.rpartition(".")
    parent = model.get_submodule(parent_name)
    setattr(parent, child_name, LoraLinear(change.layer, change.lora_A, change.lora_B, change.scaling))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()
