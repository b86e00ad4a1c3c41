"""Click-to-call requests: answered at once, then followed to ringing, answered or failed (with the reason)."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from crm.settings import Settings
from cti.ami import AmiConnector

logger = logging.getLogger(__name__)

ORIGINATE_TIMEOUT_MS = 30_000
# After the agent's phone has rung out, Asterisk answers within a second; beyond this nobody will.
RESPONSE_GRACE_SECONDS = 15.0
KEEP_REQUESTS = 5_000
# OriginateResponse 'Reason' (the last control frame the first channel got) → our reason code.
FAILURE_REASONS = {"0": "phone_unavailable", "1": "hung_up", "3": "no_answer", "5": "busy", "8": "congestion"}


@dataclass(frozen=True, slots=True)
class CallRequest:
    """One click-to-call as the person who clicked sees it; `call_id` is the call's Linkedid."""

    id: str
    user_id: int
    pbx: str
    extension: str
    number: str  # E.164, as shown
    call_id: str
    state: str  # queued / ringing (the agent's phone) / answered (agent picked up; the number is dialled) / failed
    reason: str | None
    detail: str
    created_at: float
    updated_at: float

    def to_json(self) -> dict[str, object]:
        return {"request_id": self.id, "pbx": self.pbx, "extension": self.extension, "number": self.number,
                "call_id": self.call_id, "state": self.state, "reason": self.reason, "detail": self.detail,
                "created_at": self.created_at, "updated_at": self.updated_at}


Listener = Callable[[CallRequest], Awaitable[None]]


class ClickToCall:
    """Places Originates without waiting for the manager to pick up; reports each change to `listener`."""

    def __init__(self, settings: Settings, connectors: Callable[[str], AmiConnector | None],
                 listener: Listener) -> None:
        self.settings = settings
        self.connectors = connectors
        self.listener = listener
        self.requests: OrderedDict[str, CallRequest] = OrderedDict()
        self._tasks: set[asyncio.Task] = set()

    def place(self, user_id: int, pbx: str, extension: str, number: str, caller_name: str) -> CallRequest:
        """Register the request and start it; returns at once (state 'queued')."""
        # Everything below goes into an AMI action: no line breaks, no header smuggling.
        if not re.fullmatch(r"\d{2,6}", extension) or not re.fullmatch(r"\+\d{3,20}", number):
            raise ValueError("extension must be 2-6 digits and the number +3-20 digits")
        request_id = secrets.token_hex(8)
        now = time.time()
        request = CallRequest(request_id, user_id, pbx, extension, number, f"c2c-{request_id}", "queued", None,
                              "", now, now)
        self._remember(request)
        name = re.sub(r'[\r\n"<>\\]', "", caller_name)[:40]
        caller_id = f'"{name}" <{extension}>'
        task = asyncio.create_task(self._run(request, caller_id), name=f"click-to-call-{request_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return request

    def get(self, request_id: str) -> CallRequest | None:
        return self.requests.get(request_id)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _remember(self, request: CallRequest) -> None:
        self.requests[request.id] = request
        self.requests.move_to_end(request.id)
        while len(self.requests) > KEEP_REQUESTS:
            self.requests.popitem(last=False)

    async def _set(self, request: CallRequest, state: str, reason: str | None = None,
                   detail: str = "") -> CallRequest:
        request = replace(request, state=state, reason=reason, detail=detail, updated_at=time.time())
        self._remember(request)
        try:
            await self.listener(request)
        except Exception:  # telling the browser must never stop following the call
            logger.exception("click-to-call %s: listener failed", request.id)
        return request

    async def _run(self, request: CallRequest, caller_id: str) -> None:
        connector = self.connectors(request.pbx)
        if connector is None:
            await self._set(request, "failed", "pbx_unavailable", f"no PBX named {request.pbx}")
            return
        channel = self.settings.originate_channel.format(extension=request.extension)
        try:
            # The dialplan gets the number as digits, as a phone would dial it (the lab's _X. patterns).
            outcome = await connector.originate_queued(
                channel, self.settings.outbound_context, request.number.lstrip("+"), caller_id,
                action_id=request.call_id, channel_id=request.call_id, timeout_ms=ORIGINATE_TIMEOUT_MS)
        except (ConnectionError, TimeoutError) as exc:
            logger.warning("click-to-call %s: the PBX did not take it: %s", request.id, exc)
            await self._set(request, "failed", "pbx_refused", str(exc))
            return
        request = await self._set(request, "ringing")
        try:
            result = await asyncio.wait_for(outcome, ORIGINATE_TIMEOUT_MS / 1000 + RESPONSE_GRACE_SECONDS)
        except (ConnectionError, TimeoutError) as exc:
            await self._set(request, "failed", "no_response", str(exc) or "the PBX sent no OriginateResponse")
            return
        if result.success:
            await self._set(request, "answered")
        else:
            reason = FAILURE_REASONS.get(result.reason, "failed")
            logger.info("click-to-call %s from %s failed: %s (Reason %s)", request.id, request.extension, reason,
                        result.reason)
            await self._set(request, "failed", reason, f"Asterisk reason {result.reason or '?'}")
