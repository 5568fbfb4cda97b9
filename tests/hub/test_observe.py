"""hub.observe: the care stages' current figures read into the documented shape."""

from __future__ import annotations

from typing import Any

from hub.metrics import HubMetrics
from hub.observe import CareFiguresAdapter
from hub.settings import Settings


class LeadShape:
    def figures(self) -> dict[str, Any]:
        return {"care_inputs": 5, "care_failures": 1, "outputs": {"task": 3},
                "tasks_open": 3, "tasks_overdue": 0,
                "caseload_points": {"med|cm-ana": 4}, "caseload_cap_points": {"med|cm-ana": 30,
                                                                              "med|cm-bo": 30},
                "unassigned_points": {"med": 2}}


def test_care_figures_adapter() -> None:
    figs = CareFiguresAdapter(LeadShape()).figures()
    assert figs["caseloads"] == [
        {"team": "med", "manager": "cm-ana", "points": 4, "cap_points": 30},
        {"team": "med", "manager": "cm-bo", "points": 0, "cap_points": 30}]
    assert figs["stages"] == {"care": {"processed": 5}}
    m = HubMetrics(Settings())
    m.add_provider(CareFiguresAdapter(LeadShape()))
    text = m.render().decode()
    assert 'hub_caseload_points{manager="cm-ana",team="med"} 4.0' in text
    assert 'hub_caseload_cap_points{manager="cm-bo",team="med"} 30.0' in text
