"""Generate the committed JSON Schema files from the models: ``python -m schemas.generate``.

A test regenerates them in memory and fails when the committed files drift, so the
published contract never disagrees with the code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from schemas.canonical import CanonicalEvent
from schemas.care import (
    AssignmentOutput,
    EscalationOutput,
    FlagOutput,
    NotificationOutput,
    PatientCommand,
    TaskOutput,
    TaskUpdate,
    TeamRequest,
)
from schemas.records import DeadLetter
from schemas.referrals import (
    AgencyReferral,
    ConsentRecord,
    DeliveryJob,
    ReferralCommand,
    ReferralOutput,
    ReferralUpdate,
)

OUT_DIR = Path(__file__).parent / "jsonschema"
MODELS: dict[str, type[BaseModel]] = {
    "canonical-event": CanonicalEvent,
    "dead-letter": DeadLetter,
    "flag": FlagOutput,
    "assignment": AssignmentOutput,
    "task": TaskOutput,
    "escalation": EscalationOutput,
    "notification": NotificationOutput,
    "task-update": TaskUpdate,
    "team-request": TeamRequest,
    "patient-command": PatientCommand,
    "referral": ReferralOutput,
    "agency-referral": AgencyReferral,
    "referral-update": ReferralUpdate,
    "referral-command": ReferralCommand,
    "consent": ConsentRecord,
    "delivery-job": DeliveryJob,
}


def render() -> dict[str, str]:
    """File name -> JSON text, deterministic (sorted keys, trailing newline)."""
    out = {}
    for name, model in MODELS.items():
        schema = model.model_json_schema(by_alias=True, mode="serialization")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"urn:care-hub:schema:{name}"
        out[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def main() -> int:
    OUT_DIR.mkdir(exist_ok=True)
    for fname, text in render().items():
        (OUT_DIR / fname).write_text(text)
        print(f"wrote {OUT_DIR / fname}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
