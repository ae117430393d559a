"""Render audit results: a terminal table, and a Markdown or HTML report with a plot."""

from __future__ import annotations

import html
import math
from pathlib import Path

from matplotlib.figure import Figure
from rich.table import Table

from fedscene.audit.ledgers import LedgerAudit

COLUMNS = ("scene", "unit", "rounds", "steps", "sample rate", "noise", "clip", "delta",
           "eps recorded", "eps PRV", "eps PLD", "eps RDP", "budget", "remaining", "verdict")


def _number(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}g}" if abs(value) < 1e-2 and value != 0 else f"{value:.{digits}f}"


def rows(results: list[LedgerAudit]) -> list[list[str]]:
    return [[r.scene, r.unit or "-", str(r.rounds), str(r.steps), _number(r.sample_rate, 4),
             _number(r.noise_multiplier), _number(r.max_grad_norm, 2), _number(r.delta, 3),
             _number(r.epsilon_recorded), _number(r.epsilon_prv), _number(r.epsilon_pld),
             _number(r.epsilon_rdp), _number(r.budget_epsilon, 2), _number(r.remaining),
             r.verdict] for r in results]


def terminal_table(results: list[LedgerAudit]) -> Table:
    table = Table(title="privacy budget audit (epsilon is cumulative over every step taken)")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("scene", "verdict") else "right")
    styles = {"ok": "green", "near budget": "yellow"}
    for result, row in zip(results, rows(results), strict=True):
        table.add_row(*row, style=styles.get(result.verdict, "bold red"))
    return table


def plot_epsilon(results: list[LedgerAudit], path: Path) -> None:
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    for result in results:
        if result.per_entry:
            xs = list(range(1, len(result.per_entry) + 1))
            ys = [e["epsilon_prv"] for e in result.per_entry]
            line = ax.plot(xs, ys, marker="o", label=f"{result.scene}")[0]
            if result.budget_epsilon and math.isfinite(result.budget_epsilon):
                ax.axhline(result.budget_epsilon, color=line.get_color(), ls=":", lw=0.8)
    ax.set_xlabel("training call (round) in the ledger")
    ax.set_ylabel("cumulative epsilon (PRV)")
    ax.set_title("epsilon over rounds (dotted: budget)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_report(results: list[LedgerAudit], path: Path) -> None:
    """Markdown, or HTML when the file name ends in .html; the plot is written beside it."""
    plot = path.with_name(path.stem + "_epsilon.png")
    plot_epsilon(results, plot)
    problems = [(r.ledger, reason) for r in results for reason in r.reasons]
    meanings = [(r.ledger, f"unit {r.unit}: one purchase: {r.per_purchase}; one shopper: "
                           f"{r.per_shopper}") for r in results if r.per_purchase]
    verdict = "PASSED" if all(r.passed for r in results) else "FAILED"
    if path.suffix.lower() in (".html", ".htm"):
        head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
                       for row in rows(results))
        notes = "".join(f"<li><code>{html.escape(ledger)}</code>: {html.escape(reason)}</li>"
                        for ledger, reason in problems)
        means = "".join(f"<li><code>{html.escape(ledger)}</code>: {html.escape(text)}</li>"
                        for ledger, text in meanings)
        path.write_text(
            f"<!doctype html><html><head><meta charset='utf-8'><title>fedscene audit</title>"
            f"</head><body><h1>fedscene privacy audit: {verdict}</h1>"
            f"<table border='1' cellpadding='4'><tr>{head}</tr>{body}</table>"
            f"<h2>Findings</h2><ul>{notes or '<li>none</li>'}</ul>"
            f"<h2>What the spend means</h2><ul>{means or '<li>-</li>'}</ul>"
            f"<img src='{plot.name}' alt='epsilon over rounds'></body></html>")
        return
    lines = [f"# fedscene privacy audit: {verdict}", "",
             "Epsilon recomputed from the mechanism records alone (noise, sample rate, steps, "
             "delta): Opacus PRV at every entry; Opacus RDP and dp-accounting PLD at the last.",
             "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(results)]
    lines += ["", "## Findings", ""]
    lines += [f"- `{ledger}`: {reason}" for ledger, reason in problems] or ["- none"]
    lines += ["", "## What the spend means (group privacy over the units a purchase or a "
                  "shopper can change)", ""]
    lines += [f"- `{ledger}`: {text}" for ledger, text in meanings] or ["- -"]
    lines += ["", f"![epsilon over rounds]({plot.name})", ""]
    path.write_text("\n".join(lines))
