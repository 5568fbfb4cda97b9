"""``make demo EXIT=1`` end to end: the embedded broker, the hub, the synthetic feed over
MLLP, the care stages, and the referral loop played over the agency API.

Runs the real command in a subprocess (the demo always uses the embedded broker: it is
what a newcomer gets with nothing configured).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_demo_exits_zero_after_closing_the_referral_loop(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HUB_") and k not in ("KAFKA_BOOTSTRAP",)}
    env.update({"HUB_STATE_DIR": str(tmp_path / "state"), "HUB_MLLP_PORT": "0",
                "HUB_HTTP_PORT": "0", "HUB_WORKER_WEB_PORT": str(_free_port()), "COLUMNS": "120"})
    proc = subprocess.run([sys.executable, "-m", "hub.cli", "run", "--demo", "--exit"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, (out[-3000:], proc.stderr[-3000:])
    assert "care.referrals" in out and "care.flags" in out
    assert "Referral loop over the agency API: housing" in out
    loop = out[out.index("Referral loop over the agency API"):]
    for step in ("referred", "agency read it", "accepted", "completed"):
        assert step in loop
    # The agency's copy: the minimum-necessary field set, nothing else.
    for name in ("agency_id", "discharge_date", "need", "patient", "referring"):
        assert name in loop
    assert "patient_key" not in loop and "need_codes" not in loop
