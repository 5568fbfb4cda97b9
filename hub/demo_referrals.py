"""The demo's closed referral loop, driven over the real HTTP API.

After the synthetic feed is replayed, the demo plays a community agency: it gets a
fresh bearer token (its hash pushed to config.agencies, as ``hub agencies token`` +
``hub agencies push`` would), reads its referrals with that token, accepts one housing
referral and completes it, and after each step reads the case manager's view
(``GET /care/referrals`` with a staff token) until the status shows there. Every step
goes through Kafka (referrals.updates -> the referrals agent -> care.referrals -> the
view), so the table it prints is the loop really closing.

Tokens are random per run and never printed; nothing here prints PHI (ids, codes and
field names only).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from rich.console import Console
from rich.table import Table

from hub.agencies import new_token, push_directory
from hub.settings import Settings
from streams.referrals.directory import AgencyApi, Directory

STEP_TIMEOUT_S = 45.0


class LoopError(RuntimeError):
    """A step of the loop did not happen in time (the message says which)."""


@dataclass
class LoopResult:
    agency_id: str = ""
    referral_id: str = ""
    need: str = ""
    agency_fields: list[str] = field(default_factory=list)
    steps: list[tuple[str, str, str]] = field(default_factory=list)
    """(step, HTTP answer, status the case manager's view shows)."""
    time_to_accept_s: float | None = None
    time_to_complete_s: float | None = None


def with_tokens(directory: Directory, agency_ids: list[str]) -> tuple[Directory, dict[str, str]]:
    """The directory with a fresh token hash for each named agency, and the tokens."""
    tokens: dict[str, str] = {}
    agencies = []
    for agency in directory.agencies:
        if agency.id in agency_ids:
            token, digest = new_token()
            tokens[agency.id] = token
            agency = agency.model_copy(update={"api": AgencyApi(token_sha256=digest)})
        agencies.append(agency)
    return directory.model_copy(update={"agencies": tuple(agencies)}), tokens


async def _until(what: str, probe: Any) -> Any:
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while time.monotonic() < deadline:
        got = await probe()
        if got:
            return got
        await asyncio.sleep(0.3)
    raise LoopError(f"timed out after {STEP_TIMEOUT_S:.0f} s waiting for {what}")


async def run_loop(settings: Settings, base_url: str, directory: Directory, staff_token: str,
                   *, need: str = "housing") -> LoopResult:
    """Refer -> agency reads -> accepts -> completes, each step seen by the case manager."""
    result = LoopResult()
    candidates = [a.id for a in directory.agencies if need in a.services]
    live, tokens = with_tokens(directory, candidates)
    await push_directory(settings, live)
    staff = {"Authorization": f"Bearer {staff_token}"}
    async with aiohttp.ClientSession(base_url=base_url,
                                     timeout=aiohttp.ClientTimeout(total=15)) as http:

        async def staff_rows(**query: str) -> list[dict[str, Any]]:
            async with http.get("/care/referrals", headers=staff, params=query) as resp:
                if resp.status != 200:
                    return []
                rows: list[dict[str, Any]] = (await resp.json())["referrals"]
                return rows

        async def requested() -> dict[str, Any] | None:
            rows = [r for r in await staff_rows(status="requested")
                    if r["need"] == need and r["agency"] in tokens]
            return min(rows, key=lambda r: (r["agency"], r["id"])) if rows else None

        row = await _until(f"a {need} referral in the case manager's view", requested)
        result.agency_id, result.referral_id, result.need = row["agency"], row["id"], need
        result.steps.append(("referred", "-", row["status"]))
        agency = {"Authorization": f"Bearer {tokens[result.agency_id]}"}

        async def agency_copy() -> dict[str, Any] | None:
            # The view picks up the pushed directory (with this token) within a poll.
            async with http.get(f"/agency/referrals/{result.referral_id}",
                                headers=agency) as resp:
                return await resp.json() if resp.status == 200 else None

        copy = await _until("the agency to read its referral with its token", agency_copy)
        result.agency_fields = sorted(copy)
        result.steps.append(("agency read it (GET /agency/referrals/{id})", "200",
                             row["status"]))

        async def status_is(want: str) -> dict[str, Any] | None:
            for r in await staff_rows():
                if r["id"] == result.referral_id and r["status"] == want:
                    return r
            return None

        for status in ("accepted", "completed"):
            async with http.post(f"/agency/referrals/{result.referral_id}/status",
                                 headers=agency, json={"status": status}) as resp:
                answer = str(resp.status)
                if resp.status != 202:
                    raise LoopError(f"POST status {status} answered {resp.status}")
            seen = await _until(f"the case manager's view to show {status}",
                                lambda s=status: status_is(s))  # type: ignore[misc]
            result.steps.append((f"agency: {status} (POST .../status)", answer,
                                 seen["status"]))
            result.time_to_accept_s = seen.get("time_to_accept_s")
            result.time_to_complete_s = seen.get("time_to_complete_s")
    return result


def _duration(seconds: float) -> str:
    # Feed times are synthetic (fixed dates) and agency answers are live, so spans can be
    # weeks: say them in units a case manager reads.
    minutes, sec = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {sec} s" if minutes else f"{seconds:.1f} s"


def render(result: LoopResult, console: Console) -> None:
    table = Table(title=f"Referral loop over the agency API: {result.need} -> "
                        f"{result.agency_id} (referral {result.referral_id[:8]})")
    table.add_column("step")
    table.add_column("HTTP", justify="right")
    table.add_column("case manager's view")
    for step, answer, seen in result.steps:
        table.add_row(step, answer, seen)
    if result.time_to_accept_s is not None:
        table.add_row("time to accept (since referred)", "", _duration(result.time_to_accept_s))
    if result.time_to_complete_s is not None:
        table.add_row("time to complete (since referred)", "",
                      _duration(result.time_to_complete_s))
    table.add_row("fields the agency received", "", ", ".join(result.agency_fields))
    console.print(table)
