"""The systems table: what each task of a run cost (throughput, latency percentiles, batches) and the run's memory
and energy, from the profiler's summary (harness/systems/profiler.py). A value the hardware could not give reads "n/a"."""

from __future__ import annotations

import pandas as pd
from rich.console import Console
from rich.table import Table

from harness.record.tables import SYSTEMS_COLUMNS as COLUMNS
from harness.record.tables import systems_frame

# Past this many tasks the per-task rows are left to results.csv: the run's row is what a reader looks for first.
MAX_PRINTED_TASKS = 12


def print_systems(systems: dict, hardware: str) -> None:
    frame = systems_frame(systems)
    tasks = len(frame) - 1
    if tasks > MAX_PRINTED_TASKS:
        frame = frame[frame["scope"] == "run"]
    peak = systems["memory"].get("peak_rss_bytes")
    memory = f"peak RSS {peak / 2**20:.0f} MiB" if isinstance(peak, int) else "peak RSS n/a"
    table = Table(title=f"systems ({hardware}; {memory})")
    if tasks > MAX_PRINTED_TASKS:
        table.caption = f"the run as a whole; each of its {tasks} tasks: results.csv (systems:* rows)"
    shown = [(column, scale, fmt) for column, _, scale, fmt, printed in COLUMNS if printed]
    table.add_column("task", justify="left", no_wrap=True)
    for column, _, _ in shown:
        table.add_column(column, justify="right")
    for record in frame.to_dict("records"):
        cells = ["n/a" if record[column] is None or pd.isna(record[column]) else fmt.format(record[column] * scale)
                 for column, scale, fmt in shown]
        table.add_row(record["scope"], *cells)
    Console().print(table)
    speculation = systems.get("run", {}).get("speculation")
    if speculation:  # a speculative run: what its drafts were worth (per task in results.json)
        rate, share = speculation["acceptance_rate"], speculation["draft_share"]
        accepted = f"{rate:.0%} of {speculation['proposed']} drafts kept" if isinstance(rate, float) else "no drafts"
        drafting = f"{share:.0%} of the decoding time drafting" if isinstance(share, float) else "drafting untimed"
        print(f"speculative decoding: {accepted}, {speculation['tokens_per_row_step']:.2f} tokens a sequence per "
              f"target step, {drafting}")


def print_sweep(rows: list[dict], title: str) -> None:
    """`harness profile`'s table: one row per configuration and way of decoding, medians (decode tokens/s and the
    ratios with their spread over repeats; the CSV has every spread); with several ways, decode tokens/s and request
    latency as ratios to the plain way's, and a speculative row's acceptance."""
    def cell(row: dict, metric: str, scale: float, fmt: str, spread: bool = False) -> str:
        if row.get(metric) is None:
            return "-"
        low, high = (fmt.format(row[metric + suffix] * scale) for suffix in ("_min", "_max"))
        return fmt.format(row[metric] * scale) + (f" [{low}-{high}]" if spread and low != high else "")

    ways = len({row.get("decoding") for row in rows}) > 1
    speculative = any(row.get("acceptance_rate") is not None for row in rows)
    table = Table(title=title)
    columns = ["decoding"] * ways + ["batch", "prompt", "new", "prefill tok/s", "decode tok/s"]
    columns += ["decode vs plain", "latency vs plain"] * ways + ["TTFT ms", "ITL p50 ms"]
    columns += ["accepted", "tokens a step", "draft time"] * speculative + ["of FLOP limit"]
    for column in columns:
        table.add_column(column, justify="left" if column == "decoding" else "right")
    for row in rows:
        fraction = row.get("fraction_of_matmul_limit")
        cells = [row["decoding"]] * ways + [str(row["batch_size"]), str(row["prompt_length"]), str(row["new_tokens"]),
                                            cell(row, "prefill_tokens_per_s", 1, "{:.0f}"),
                                            cell(row, "decode_tokens_per_s", 1, "{:.1f}", spread=True)]
        if ways:
            cells += [cell(row, "decode_tokens_per_s_vs_plain", 1, "{:.2f}x", spread=True),
                      cell(row, "latency_s_vs_plain", 1, "{:.2f}x", spread=True)]
        cells += [cell(row, "ttft_s", 1e3, "{:.0f}"), cell(row, "itl_p50_s", 1e3, "{:.1f}")]
        if speculative:
            cells += [cell(row, "acceptance_rate", 100, "{:.0f} %"), cell(row, "tokens_per_row_step", 1, "{:.2f}"),
                      cell(row, "draft_share", 100, "{:.0f} %")]
        table.add_row(*cells, "-" if fraction is None else f"{100 * fraction:.0f} %")
    console = Console()
    if not console.is_terminal:  # a file or a pipe: rich would wrap at 80 columns
        console = Console(width=180)
    console.print(table)
