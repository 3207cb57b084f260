"""Sparse mixture-of-experts MLPs: the block Mixtral uses, and the conversion of a dense LLaMA into one.

`SparseMoE` replaces a layer's SwiGLU MLP with E SwiGLU experts and a router (Mixtral's: a bias-free Linear
hidden -> E) that sends each token to its top K experts. Two ways to weigh the chosen experts' outputs:
  - "softmax", Mixtral's (Jiang et al. 2024, "Mixtral of Experts", arXiv:2401.04088, and transformers'
    MixtralTopKRouter): softmax over all E router logits in fp32, keep the top K probabilities, renormalise them
    to sum to 1 (the same as a softmax over the K chosen logits);
  - "sum", the converted dense model's: the chosen experts' outputs are added with weight 1, so that choosing
    all E experts gives back exactly the dense MLP.

`moefy(model, experts, top_k)` is the ":moe-eEkK" variant: every dense `llama.MLP` of a reference LLaMA becomes
E experts without any training, following MoEfication (Zhang et al. 2022, "MoEfication: Transformer Feed-forward
Layers are Mixtures of Experts", Findings of ACL 2022):
  - experts by parameter clustering: the intermediate neurons are grouped by balanced k-means on their gate_proj
    rows (the vectors that decide whether a neuron's gate opens), intermediate / E neurons per expert. Balance is
    enforced by a greedy assignment (nearest free cluster first, closest pairs first) rather than MoEfication's
    optimal balanced assignment: simpler, and good enough for a router that is only an estimate anyway. Expert e
    holds its neurons' gate_proj and up_proj rows and down_proj columns, so the E experts' outputs sum to the
    dense output exactly (SwiGLU is a sum over neurons);
  - router by expected gate activation: expert e's score for token x estimates the mean over its neurons i of
    relu(g_i . x), how far its gates open (silu is small for negative input and near identity for positive).
    Across the expert's neurons, g_i . x has mean x . c_e (c_e the mean gate row, the cluster centre) and
    variance x^T S_e x (S_e the covariance of its gate rows, kept at rank ROUTER_RANK); taking it as Gaussian,
    E[relu] = mu * Phi(mu / sigma) + sigma * phi(mu / sigma) (the mean of a rectified normal). The mu term alone
    is MoEfication's "similarity selection"; it is not enough for a SwiGLU LLaMA: on SmolLM2-135M with 8 experts
    (two short texts, dense NLL 1.68 / 0.87), K = 6 gave NLL 12.4 / 4.7 with x . c_e, 4.4 / 2.5 with this
    estimate, 4.5 / 2.3 with the exact mean of relu(g_i . x), and 2.1 / 1.3 with an oracle that picks the experts
    of largest actual output. The router's parameters, E x (1 + rank) x hidden, are used by every token.

Expert load is counted as the model runs: tokens routed to each expert, per layer (`expert_load`,
`reset_expert_load`). Every position the model is given counts, padding included. The load-balance coefficient
is the coefficient of variation of tokens per expert, std / mean (population std), whose square Shazeer et al.
2017 ("Outrageously Large Neural Networks: The Sparsely-Gated Mixture-of-Experts Layer", ICLR 2017, section 4)
penalise as their load loss: 0 when every expert gets the same number of tokens, sqrt(E / K - 1) when every token
goes to the same K experts. It is chosen over the Switch Transformer's E * sum_i f_i * P_i because it needs only
the counts, whereas P_i needs router probabilities, which the gate-activation router does not produce.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import UserError
from harness.models.llama import MLP

GATINGS = ("softmax", "sum")
# Rank of each expert's gate-row covariance in the converted model's router. On SmolLM2-135M (two short texts) rank
# 4 routed about as well as 16 or 64, and it costs (1 + 4) x hidden per expert, under 1 % of a 192-neuron expert.
ROUTER_RANK = 4


class SparseMoE(nn.Module):
    """A router and `num_experts` SwiGLU experts of `expert_config.intermediate_size` neurons each; top-k routing.

    The router maps (tokens, hidden) to scores (tokens, experts); by default a bias-free Linear, as Mixtral's.
    """

    def __init__(self, expert_config, num_experts: int, top_k: int, gating: str, router: nn.Module | None = None):
        super().__init__()
        if gating not in GATINGS:
            raise ValueError(f"gating must be one of {GATINGS}, not {gating!r}")
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be between 1 and the number of experts ({num_experts}), not {top_k}")
        self.num_experts = num_experts
        self.top_k = top_k
        self.gating = gating
        self.router = router if router is not None else nn.Linear(expert_config.hidden_size, num_experts, bias=False)
        self.experts = nn.ModuleList(MLP(expert_config) for _ in range(num_experts))
        # Not a buffer: it must stay out of the state dict (checkpoints do not have it) and must not be created on
        # the meta device when a model is built there before loading. Accumulated on the model's device.
        self.tokens_per_expert: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        tokens = x.reshape(-1, shape[-1])
        scores = self.router(tokens)  # (tokens, experts)
        if self.gating == "softmax":
            probabilities = F.softmax(scores.float(), dim=-1)
            weights, chosen = torch.topk(probabilities, self.top_k, dim=-1)
            weights = weights / weights.sum(dim=-1, keepdim=True)
        else:
            weights = None
            _, chosen = torch.topk(scores, self.top_k, dim=-1)
        self._count(chosen)

        out = torch.zeros_like(tokens)
        for index, expert in enumerate(self.experts):
            token_rows, slots = (chosen == index).nonzero(as_tuple=True)
            if token_rows.numel() == 0:
                continue
            expert_out = expert(tokens[token_rows])
            if weights is not None:  # fp32 weights, as transformers does, then back to the activation dtype
                expert_out = (expert_out * weights[token_rows, slots, None]).to(out.dtype)
            out.index_add_(0, token_rows, expert_out)
        return out.reshape(shape)

    @torch.no_grad()
    def _count(self, chosen: torch.Tensor) -> None:
        counts = torch.bincount(chosen.flatten(), minlength=self.num_experts)
        self.tokens_per_expert = counts if self.tokens_per_expert is None else self.tokens_per_expert + counts

    def expert_parameters(self) -> int:
        """Parameters of one expert (all experts have the same shape)."""
        return sum(p.numel() for p in self.experts[0].parameters())


def sparse_moe_layers(model: nn.Module) -> list[SparseMoE]:
    """The model's SparseMoE blocks in layer order (module registration order)."""
    return [module for module in model.modules() if isinstance(module, SparseMoE)]


def reset_expert_load(model: nn.Module) -> None:
    for moe in sparse_moe_layers(model):
        moe.tokens_per_expert = None


def expert_load(model: nn.Module) -> dict:
    """Tokens routed to each expert in each layer since the last reset, as a plain dict for the run record.

    {"layers": [{"layer": i, "tokens_per_expert": [...], "load_balance_cv": std / mean or None before any
    token}], "mean_load_balance_cv": the mean over layers or None}. Each layer's counts sum to tokens x top_k.
    """
    layers = []
    for layer, moe in enumerate(sparse_moe_layers(model)):
        counts = [0] * moe.num_experts if moe.tokens_per_expert is None else moe.tokens_per_expert.tolist()
        cv = coefficient_of_variation(counts)
        layers.append({"layer": layer, "tokens_per_expert": counts, "load_balance_cv": cv})
    cvs = [entry["load_balance_cv"] for entry in layers if entry["load_balance_cv"] is not None]
    return {"layers": layers, "mean_load_balance_cv": sum(cvs) / len(cvs) if cvs else None}


def coefficient_of_variation(counts: list[int]) -> float | None:
    mean = sum(counts) / len(counts)
    if mean == 0:
        return None
    variance = sum((c - mean) ** 2 for c in counts) / len(counts)
    return variance ** 0.5 / mean


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(total, active per token). Active counts every parameter a token uses: all of them but the experts a
    token is not routed to; embeddings and the output head count whole, as Mixtral's 12.9B active of 46.7B do
    (a tied embedding counts once)."""
    total = sum(p.numel() for p in model.parameters())
    idle = sum((moe.num_experts - moe.top_k) * moe.expert_parameters() for moe in sparse_moe_layers(model))
    return total, total - idle


# --- The dense-to-MoE conversion -----------------------------------------------------------------------------


def moefy(model: nn.Module, experts: int, top_k: int) -> dict:
    """Turns every dense `llama.MLP` of a reference LLaMA into a SparseMoE of `experts` experts, `top_k` per token.

    In place: each decoder layer's `mlp` is replaced. Returns the conversion's report (plain data):
    {"variant", "experts", "top_k", "neurons_per_expert", "layers", "router", "active_parameters_per_token",
    "total_parameters"}. Each layer's expert load after a run: `expert_load(model)`; `reset_expert_load(model)`
    starts the count again.
    """
    if not 1 <= top_k <= experts:
        raise UserError(f"MoE variant needs 1 <= K <= E, got E={experts}, K={top_k}")
    layers = [layer for layer in model.model.layers if isinstance(layer.mlp, MLP)]
    if not layers:
        raise UserError("the model has no dense SwiGLU MLP to split into experts")
    intermediate = model.config.intermediate_size
    if intermediate % experts:
        raise UserError(f"cannot split {intermediate} intermediate neurons into {experts} equal experts: "
                        f"choose an expert count that divides {intermediate}")
    for layer in layers:
        layer.mlp = split_mlp(layer.mlp, model.config, experts, top_k)
    total, active = parameter_counts(model)
    return {
        "variant": f"moe-e{experts}k{top_k}",
        "experts": experts,
        "top_k": top_k,
        "neurons_per_expert": intermediate // experts,
        "layers": len(layers),
        "router": f"MoEfication split (balanced k-means on gate_proj rows); expected gate activation, rank "
                  f"{ROUTER_RANK}; chosen outputs summed",
        "active_parameters_per_token": active,
        "total_parameters": total,
    }


class GateActivationRouter(nn.Module):
    """Scores each expert by the expected relu(g_i . x) over its neurons, under a Gaussian approximation.

    `centres` (experts, hidden) are the mean gate rows; `spread` (experts, rank, hidden) is scaled so that
    |spread_e x|^2 = x^T S_e x, the variance of g_i . x across expert e's neurons (exact up to the rank kept).
    """

    def __init__(self, centres: torch.Tensor, spread: torch.Tensor):
        super().__init__()
        self.centres = nn.Parameter(centres)
        self.spread = nn.Parameter(spread)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        experts, rank, hidden = self.spread.shape
        mean = F.linear(x, self.centres).float()
        std = F.linear(x, self.spread.reshape(experts * rank, hidden)).float()
        std = std.reshape(-1, experts, rank).norm(dim=-1).clamp_min(1e-12)  # a one-neuron expert: relu(mean)
        z = mean / std
        below = 0.5 * (1 + torch.erf(z / math.sqrt(2)))  # Phi(z)
        density = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)  # phi(z)
        return mean * below + std * density

    @classmethod
    def from_gate_rows(cls, groups: list[torch.Tensor], rank: int) -> GateActivationRouter:
        """From each expert's gate_proj rows (neurons, hidden): their mean and the top of their covariance."""
        centres, spreads = [], []
        for rows in groups:
            rows = rows.float()
            centre = rows.mean(dim=0)
            _, singular, directions = torch.linalg.svd(rows - centre, full_matrices=False)
            # (rows - centre)^T (rows - centre) / n = V diag(s^2 / n) V^T: the covariance of the rows.
            spreads.append(singular[:rank, None] * directions[:rank] / math.sqrt(rows.shape[0]))
            centres.append(centre)
        return cls(torch.stack(centres), torch.stack(spreads))


@torch.no_grad()
def split_mlp(dense: MLP, config, experts: int, top_k: int) -> SparseMoE:
    """A SparseMoE ("sum" gating) whose experts partition the dense MLP's neurons; all experts together = dense."""
    gate, up, down = dense.gate_proj.weight, dense.up_proj.weight, dense.down_proj.weight
    groups = balanced_kmeans(gate.float(), experts)
    router = GateActivationRouter.from_gate_rows([gate[neurons] for neurons in groups], ROUTER_RANK).to(gate.dtype)
    expert_config = dataclasses.replace(config, intermediate_size=gate.shape[0] // experts)
    with torch.device("meta"):  # the weights come from the dense MLP; nothing to initialise
        moe = SparseMoE(expert_config, experts, top_k, gating="sum", router=router)
    state = {}
    for e, neurons in enumerate(groups):
        state[f"{e}.gate_proj.weight"] = gate[neurons]  # indexing with a tensor copies
        state[f"{e}.up_proj.weight"] = up[neurons]
        state[f"{e}.down_proj.weight"] = down[:, neurons].contiguous()
    moe.experts.load_state_dict(state, strict=True, assign=True)
    return moe


def balanced_kmeans(rows: torch.Tensor, clusters: int, iterations: int = 25, seed: int = 0) -> list[torch.Tensor]:
    """Splits the rows into `clusters` groups of equal size by k-means with a balanced assignment step.

    Returns, per cluster, the sorted indices of its rows. Seeded, so a conversion is reproducible.
    """
    n = rows.shape[0]
    generator = torch.Generator().manual_seed(seed)
    centres = rows[torch.randperm(n, generator=generator)[:clusters].to(rows.device)]
    assignment = None
    for _ in range(iterations):
        distances = torch.cdist(rows, centres)  # (rows, clusters)
        new_assignment = balanced_assignment(distances, capacity=n // clusters)
        if assignment is not None and torch.equal(new_assignment, assignment):
            break
        assignment = new_assignment
        centres = torch.stack([rows[assignment == c].mean(dim=0) for c in range(clusters)])
    return [torch.nonzero(assignment == c).flatten() for c in range(clusters)]


def balanced_assignment(distances: torch.Tensor, capacity: int) -> torch.Tensor:
    """Each row to a cluster, exactly `capacity` rows per cluster: closest (row, cluster) pairs first, greedily."""
    n, clusters = distances.shape
    order = distances.flatten().argsort().tolist()
    assignment = [-1] * n
    filled = [0] * clusters
    placed = 0
    for pair in order:
        row, cluster = divmod(pair, clusters)
        if assignment[row] == -1 and filled[cluster] < capacity:
            assignment[row] = cluster
            filled[cluster] += 1
            placed += 1
            if placed == n:
                break
    return torch.tensor(assignment, device=distances.device)
