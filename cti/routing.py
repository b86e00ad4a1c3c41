"""Routing decisions for the dialplan: who takes this caller. Decisions only; the doors do the I/O."""

from __future__ import annotations

from dataclasses import dataclass

from crm.matching import CallerMatch

# Agent states (cti.calls) in which the manager's phone should not be rung with a new customer.
BUSY_STATES = frozenset({"in_call", "ringing"})
UNAVAILABLE_STATES = frozenset({"offline"})


@dataclass(frozen=True, slots=True)
class RouteDecision:
    target: str
    kind: str  # manager / fallback
    reason: str
    contact_id: int | None = None
    company_id: int | None = None
    lead_id: int | None = None

    def to_json(self) -> dict:
        return {"target": self.target, "kind": self.kind, "reason": self.reason, "contact_id": self.contact_id,
                "company_id": self.company_id, "lead_id": self.lead_id}


def decide(caller_e164: str | None, match: CallerMatch | None, device_state: str | None, fallback: str,
           lead_id: int | None = None) -> RouteDecision:
    """The assigned manager's extension when they can take the call, else the fallback and why."""
    if caller_e164 is None and match is None:
        return RouteDecision(fallback, "fallback", "withheld_caller")
    if match is None:
        return RouteDecision(fallback, "fallback", "unknown_caller", lead_id=lead_id)

    def to_fallback(reason: str) -> RouteDecision:
        return RouteDecision(fallback, "fallback", reason, match.contact_id, match.company_id)

    if match.manager_id is None:
        return to_fallback("no_manager")
    if not match.manager_active:
        return to_fallback("manager_inactive")
    if not match.manager_extension:
        return to_fallback("manager_has_no_extension")
    if device_state in UNAVAILABLE_STATES:
        return to_fallback("manager_unavailable")
    if device_state in BUSY_STATES:
        return to_fallback("manager_busy")
    return RouteDecision(match.manager_extension, "manager", "assigned_manager", match.contact_id, match.company_id)


def fallback_for(reason: str, fallback: str) -> RouteDecision:
    """When the lookup itself failed or was too slow: the dialplan still gets an answer at once."""
    return RouteDecision(fallback, "fallback", reason)
