"""The report's sections written from results alone."""

from fedscene.simulations.report import absence_lines
from fedscene.simulations.results import ArmResult


def _arm(absences) -> ArmResult:
    return ArmResult(algorithm="fedper", privacy_setting="epsilon 8", per_scene={},
                     summary={}, privacy={}, failures=[], absences=absences,
                     budget_exhausted=[], too_few_units=[], not_evaluated=[],
                     evaluated_before_final_round={},
                     wall_s=1.0)


def test_absent_partners_and_held_rounds_are_named():
    lines = absence_lines({
        "local": _arm([]),
        "fedper": _arm([
            {"seed": 0, "round": 2, "phase": "train", "absent": ["Spain"],
             "reason": "not connected within 40 s (federation.partner_wait_s)"},
            {"seed": 0, "round": 3, "phase": "train", "absent": [],
             "reason": "1 partners connected, fewer than the quorum of 2"}])})
    assert lines[1] == "## Absent partners"
    assert lines[-2:] == [
        "- fedper seed 0 round 2 (train): Spain: not connected within 40 s "
        "(federation.partner_wait_s)",
        "- fedper seed 0 round 3 (train): 1 partners connected, fewer than the quorum of 2"]


def test_no_section_when_every_partner_took_part():
    assert absence_lines({"fedper": _arm([])}) == []
