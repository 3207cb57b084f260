"""The robustness section of a run (`harness run --perturb`), from its record's "robustness" rows
(harness/robustness/analysis.py): clean against perturbed side by side, then what each kind of perturbation adds
(accuracy per choice order, consistency and position bias; accuracy per prompt layout and their spread)."""

from __future__ import annotations

import pandas as pd
from rich.console import Console
from rich.table import Table


def interval(summary: dict | None, digits: int = 3) -> str:
    ci = (summary or {}).get("ci95")
    return "n/a" if not ci or ci[0] is None else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def p_value(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def robustness_frame(rows: list[dict]) -> pd.DataFrame:
    """One line per task (or pooled tasks) and perturbation: the headline metric clean and perturbed with their
    intervals, and the paired difference with its interval and p-value (numbers, for the CSV file)."""
    return pd.DataFrame([{
        "task": row["task"], "perturbation": row["perturbation"], "metric": row["metric"], "n": row["n"],
        "clean": row["clean"]["value"], "clean 95 % CI": interval(row["clean"]),
        "perturbed": row["perturbed"]["value"], "perturbed 95 % CI": interval(row["perturbed"]),
        "difference": row["difference"]["value"], "difference 95 % CI": interval(row["difference"]),
        "p": row["difference"]["p_value"], "test": row["difference"]["test"],
        "consistency": row["consistency"]["value"] if "consistency" in row else None,
        "right under every order": row["every_order"]["value"] if "every_order" in row else None,
        "position bias p": row["position_bias"]["p_value"] if "position_bias" in row else None,
        "layout spread": row["spread"]["value"] if "spread" in row else None,
        "layouts differ p": row["spread"]["p_value"] if "spread" in row else None,
        "right in every layout": row["every_layout"]["value"] if "every_layout" in row else None,
    } for row in rows])


def report_frames(runs: list[tuple[str, list[dict]]]) -> dict[str, pd.DataFrame]:
    """The report's robustness tables for (run label, its robustness rows) pairs: clean against perturbed, then the
    per-order, per-letter and per-layout details; a table no run has is left out."""
    frames: dict[str, list[pd.DataFrame]] = {"robustness": [], "robustness_orders": [], "robustness_letters": [],
                                             "robustness_layouts": []}
    for label, rows in runs:
        if rows:
            frames["robustness"].append(robustness_frame(rows).assign(run=label))
        for row in rows:
            where = {"run": label, "task": row["task"], "perturbation": row["perturbation"]}
            if "orders" in row:
                frames["robustness_orders"].append(order_frame(row).assign(**where))
                frames["robustness_letters"].append(letter_frame(row).assign(**where))
            if "layouts" in row:
                frames["robustness_layouts"].append(layout_frame(row).assign(**where))
    return {name: first_columns(pd.concat(parts, ignore_index=True), ["run", "task", "perturbation"])
            for name, parts in frames.items() if parts}


def first_columns(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return frame[columns + [c for c in frame.columns if c not in columns]]


def chart_series(rows: list[dict]) -> tuple[list[str], dict[str, list[tuple]]]:
    """Categories (task, perturbation) and the clean and perturbed series of bars_svg, with their intervals."""
    def bar(summary: dict) -> tuple:
        low, high = summary.get("ci95") or (None, None)
        return summary["value"], low, high

    categories = [f"{row['task']} {row['perturbation']}" for row in rows]
    return categories, {"clean": [bar(row["clean"]) for row in rows],
                        "perturbed": [bar(row["perturbed"]) for row in rows]}


def order_frame(row: dict) -> pd.DataFrame:
    return pd.DataFrame([{"order": f"rotated by {o['order']}" + (" (clean)" if o["order"] == 0 else ""),
                          row["metric"]: o["value"], "95 % CI": interval(o)} for o in row["orders"]])


def letter_frame(row: dict) -> pd.DataFrame:
    return pd.DataFrame([{"letter": letter["letter"], "gold share": letter["gold_share"],
                          "chosen share": letter["chosen_share"], "95 % CI": interval(letter),
                          "clean order: gold": letter["clean_gold_share"],
                          "clean order: chosen": letter["clean_chosen_share"]}
                         for letter in row["position_bias"]["letters"]])


def layout_frame(row: dict) -> pd.DataFrame:
    return pd.DataFrame([{"layout": layout["layout"], row["metric"]: layout["value"], "95 % CI": interval(layout)}
                         for layout in row["layouts"]])


def bias_sentence(row: dict) -> str:
    bias = row["position_bias"]
    statistic = "infinite" if bias["statistic"] is None else f"{bias['statistic']:.2f}"
    df = f", F({bias['df'][0]}, {bias['df'][1]})" if bias.get("df") else ""
    return (f"position bias: Hotelling T^2 = {statistic}{df}, p = {p_value(bias['p_value'])} over "
            f"{bias['questions']} questions (chosen letters against the gold letters, every choice at every letter "
            "once); consistency (the same choice under every order) "
            f"{row['consistency']['value']:.3f} {interval(row['consistency'])}; right under every order (MMBench's "
            f"CircularEval) {row['every_order']['value']:.3f} {interval(row['every_order'])}")


def spread_sentence(row: dict) -> str:
    spread = row["spread"]
    test = "Cochran's Q" if spread["test"] == "cochran-q" else "Friedman's chi-square"
    return (f"spread across layouts (best {spread['best']} minus worst {spread['worst']}): {spread['value']:.3f}; "
            f"do the layouts differ? {test} = {spread['statistic']:.2f}, p = {p_value(spread['p_value'])}; right in "
            f"every layout {row['every_layout']['value']:.3f} {interval(row['every_layout'])}")


def rich_table(frame: pd.DataFrame, title: str) -> Table:
    table = Table(title=title)
    for column in frame.columns:
        table.add_column(str(column), justify="left" if frame[column].dtype == object else "right")
    for values in frame.itertuples(index=False):
        table.add_row(*["" if value is None or (isinstance(value, float) and pd.isna(value)) else
                        f"{value:.4f}" if isinstance(value, float) else str(value)
                        for column, value in zip(frame.columns, values)])
    return table


def print_robustness(rows: list[dict], console: Console | None = None) -> None:
    console = console or Console()
    main = pd.DataFrame([{
        "task": row["task"], "perturbation": row["perturbation"], "metric": row["metric"], "n": row["n"],
        "clean": f"{row['clean']['value']:.3f} {interval(row['clean'], 2)}",
        "perturbed": f"{row['perturbed']['value']:.3f} {interval(row['perturbed'], 2)}",
        "difference": f"{row['difference']['value']:+.3f} {interval(row['difference'], 2)}",
        "p": p_value(row["difference"]["p_value"])} for row in rows])
    console.print(rich_table(main, "robustness: clean against perturbed, paired document by document"))
    # The details of pooled rows when there are any (57 MMLU subjects would fill screens), else of each task.
    detailed = [row for row in rows if row["task"].startswith("all ")] or rows
    for row in detailed:
        if "orders" not in row and "layouts" not in row:
            continue
        console.print(f"\n{row['task']}, {row['perturbation']}:")
        if "orders" in row:
            console.print(rich_table(order_frame(row), f"{row['metric']} by order of the choices"))
            console.print(rich_table(letter_frame(row), "which letter was chosen"))
            console.print(bias_sentence(row))
        if "layouts" in row:
            console.print(rich_table(layout_frame(row), f"{row['metric']} by prompt layout"))
            console.print(spread_sentence(row))
