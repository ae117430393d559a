"""Render an empirical audit: a terminal table, and a Markdown or HTML report."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from fedscene.audit.empirical import VIOLATED, Bound, EmpiricalAudit
from fedscene.common.html_page import markdown_to_html

COLUMNS = ("adversary", "epsilon lower bound", "claimed epsilon",
           "most these canaries can prove", "mean score in / out", "verdict")


def _row(audit: EmpiricalAudit, bound: Bound) -> list[str]:
    return [bound.adversary, f"{bound.epsilon_lower:.3f}", f"{audit.claimed_epsilon:.3f}",
            f"{bound.epsilon_ceiling:.3f}",
            f"{bound.mean_score_in:.3g} / {bound.mean_score_out:.3g}", bound.verdict]


def summary_line(audit: EmpiricalAudit) -> str:
    """One line: what ran, the verdict and the bounds."""
    each = 1 - (1 - audit.confidence) / 2
    return (f"{audit.verdict} at {audit.confidence:.0%} confidence: scene {audit.scene!r}, "
            f"{audit.algorithm}, unit {audit.unit}, {audit.rounds} rounds ({audit.steps} "
            f"steps), claimed epsilon {audit.claimed_epsilon:.3f} (delta {audit.delta:.3g}); "
            f"lower bounds at {each:.1%} each: white-box "
            f"{audit.white_box.epsilon_lower:.3f}, black-box "
            f"{audit.black_box.epsilon_lower:.3f}; m = {audit.canaries} canary "
            f"shoppers per adversary ({audit.included} and {audit.black_box_included} "
            f"included; {audit.canary_share:.0%} of the units trained on), "
            f"{audit.seconds:.0f} s")


def terminal_table(audit: EmpiricalAudit) -> Table:
    table = Table(title=f"empirical privacy audit of scene {audit.scene!r} (one run, "
                        f"{audit.canaries} canaries, {audit.confidence:.0%} confidence)")
    for column in COLUMNS:
        table.add_column(column)
    for bound in (audit.white_box, audit.black_box):
        table.add_row(*_row(audit, bound),
                      style="bold red" if bound.verdict == VIOLATED else "green")
    return table


def markdown(audit: EmpiricalAudit) -> str:
    lines = [f"# fedscene empirical privacy audit: {audit.verdict}", "",
             summary_line(audit) + ".", "",
             "The scene's real training (its privacy account, unit, Poisson sampling, "
             "clipping and noise) ran one campaign with canary shoppers, each included with "
             "probability 1/2; the adversaries scored them and the one-run bound (Steinke, "
             "Nasr & Jagielski 2023; jax-privacy) turned the scores into a lower bound on "
             "epsilon. A bound above the claim proves the claim false at that confidence; "
             "one at most the claim is consistent with it (it does not prove it). Perfect "
             "guesses with m canaries prove at most the column 'most these canaries can "
             "prove': a claim above it cannot be refuted at this m, whatever the mechanism "
             "does (more canaries raise it).", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_row(audit, b)) + " |" for b in (audit.white_box,
                                                                audit.black_box)]
    notes = [b.note for b in (audit.white_box, audit.black_box) if b.note]
    lines += ["", "## The run", "",
              f"- Noise source: {audit.noise_source}",
              f"- A canary shopper has {audit.examples_per_canary} training examples "
              f"({audit.unit} unit).",
              f"- The accounting audit of the run's ledger: {audit.accounting}.",
              f"- Time: {audit.seconds:.1f} s."]
    lines += [f"- Note: {note}." for note in notes]
    return "\n".join(lines) + "\n"


def write_report(audit: EmpiricalAudit, path: Path) -> None:
    """Markdown, or one HTML page when the file name ends in .html."""
    text = markdown(audit)
    if path.suffix.lower() in (".html", ".htm"):
        path.write_text(markdown_to_html(text, path.parent, "fedscene empirical audit"))
    else:
        path.write_text(text)
