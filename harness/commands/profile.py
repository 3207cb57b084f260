"""`harness profile --model SPEC`: throughput, latency and memory over batch sizes and prompt lengths, as a table and
a CSV (the sweep itself: harness/commands/profile_sweep.py)."""

from __future__ import annotations

import re
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from harness.commands.profile_sweep import PLAIN, UNCACHED, Decoding, add_flop_fractions, matmul_flops_per_s, sweep
from harness.errors import UserError
from harness.models.registry import check_decoding, load_model, parse_spec
from reports.systems import print_sweep


def profile(spec: str, device: str, dtype: str, max_length: int | None, revision: str | None, batch_sizes: list[int],
            prompt_lengths: list[int], new_tokens: list[int], repeats: int, output: Path | None,
            kv_cache: str = "on", speculative: str | None = None) -> int:
    """`kv_cache`: "on" (the plain way), "off" (no cache) or "both" (each configuration both ways, with ratios);
    `speculative`: also each configuration speculatively (harness/models/speculation.py), with ratios."""
    parse_spec(spec)
    check_decoding(spec, speculative, kv_cache != "off")
    output = output or Path("runs") / (f"profile-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-"
                                       f"{re.sub(r'[^A-Za-z0-9.-]+', '_', spec)}.csv")
    if output.exists():
        raise UserError(f"{output} already exists; choose another --output")
    adapter = load_model(spec, device=device, dtype=dtype, max_length=max_length, revision=revision,
                         progress=lambda message: print(message, file=sys.stderr), speculative=speculative)
    decodings = {"on": [PLAIN], "off": [UNCACHED], "both": [PLAIN, UNCACHED]}[kv_cache]
    if speculative is not None:  # the adapter was loaded speculating: the sweep switches it on and off
        decodings.append(Decoding(f"speculative {adapter.speculation.describe()}", speculation=adapter.speculation,
                                  draft=adapter.draft))
    rows = [row.summary() for row in sweep(adapter, batch_sizes, prompt_lengths, new_tokens, repeats, decodings,
                                           progress=lambda m: print(m, file=sys.stderr))]
    flops = matmul_flops_per_s() if device == "cpu" else None
    add_flop_fractions(rows, adapter, flops)
    output.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(output, index=False)
    print_sweep(rows, f"{spec} on {device}, {dtype}, {repeats} repeats, median [min-max]")
    if flops:
        print(f"fp32 matmul on this machine: {flops / 1e9:.0f} GFLOP/s; prefill at each prompt length uses the "
              "fraction of it shown (2 x parameters + attention FLOPs per token)")
    print(f"csv: {output}")
    return 0
