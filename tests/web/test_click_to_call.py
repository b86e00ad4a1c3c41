"""Click-to-call over the simulator: 202 at once, then ringing / answered / failed over socket.io and the API."""

import time

from tests.conftest import csrf_headers
from tests.web.live import SocketUser, session_cookie
from tests.web.test_missed_board import api_client

NUMBER = "+74951234567"


async def test_click_to_call_answers_at_once_and_follows_the_call_to_answered(live):
    base_url, sim, _ = live
    # The manager takes 6 s to pick up: the old handler waited for that and answered 503 after 5 s.
    sim.originate_timing = (6.0, 0.2, 0.3)
    manager = SocketUser()
    await manager.connect(base_url, await session_cookie(base_url, "manager1"))
    http, csrf = await api_client(None, base_url, "manager1")
    try:
        started = time.monotonic()
        resp = await http.post("/api/calls", json={"number": "8 (495) 123-45-67"}, headers=csrf_headers(csrf))
        took = time.monotonic() - started
        assert resp.status == 202, await resp.text()
        body = await resp.json()
        assert took < 2.0, f"POST /api/calls took {took:.1f} s"
        request_id = body["request_id"]
        assert {k: body[k] for k in ("state", "number", "extension", "pbx", "status_url", "call_id")} == {
            "state": "queued", "number": NUMBER, "extension": "101", "pbx": "lab",
            "status_url": f"/api/calls/requests/{request_id}", "call_id": f"c2c-{request_id}"}
        # The manager's phone rings: the popup is for this very call (its Linkedid is our ChannelId).
        popup = await manager.wait_for("popup", lambda p: p["call_id"] == body["call_id"])
        assert popup["originated"] is True
        answered = await manager.wait_for("call_request", lambda e: e["state"] == "answered", timeout=10)
        states = [e["state"] for e in manager.events("call_request") if e["request_id"] == request_id]
        assert states == ["ringing", "answered"]
        assert {k: answered[k] for k in ("request_id", "number", "display", "reason", "call_id")} == {
            "request_id": request_id, "number": NUMBER, "display": "+7 495 123-45-67", "reason": None,
            "call_id": body["call_id"]}
        status = await (await http.get(body["status_url"])).json()
        assert (status["state"], status["reason"]) == ("answered", None)
    finally:
        await http.close()
        await manager.close()


async def test_a_click_to_call_the_manager_does_not_pick_up_fails_with_the_reason(live):
    base_url, sim, _ = live
    sim.originate_timing = (0.3, 0.2, 0.3)
    sim.originate_failures["101"] = "noanswer"
    manager = SocketUser()
    await manager.connect(base_url, await session_cookie(base_url, "manager1"))
    http, csrf = await api_client(None, base_url, "manager1")
    other, _ = await api_client(None, base_url, "manager2")
    try:
        resp = await http.post("/api/calls", json={"number": NUMBER}, headers=csrf_headers(csrf))
        assert resp.status == 202, await resp.text()
        request_id = (await resp.json())["request_id"]
        failed = await manager.wait_for("call_request", lambda e: e["state"] == "failed")
        assert (failed["request_id"], failed["reason"], failed["number"]) == (request_id, "no_answer", NUMBER)
        status = await (await http.get(f"/api/calls/requests/{request_id}")).json()
        assert (status["state"], status["reason"]) == ("failed", "no_answer")
        # Another manager neither sees the request nor learns it exists.
        assert (await other.get(f"/api/calls/requests/{request_id}")).status == 404
        assert (await http.get("/api/calls/requests/0123456789abcdef")).status == 404

        sim.originate_failures["101"] = "busy"
        resp = await http.post("/api/calls", json={"number": NUMBER}, headers=csrf_headers(csrf))
        second = (await resp.json())["request_id"]
        busy = await manager.wait_for("call_request", lambda e: e["request_id"] == second and e["state"] == "failed")
        assert busy["reason"] == "busy"
    finally:
        await http.close()
        await other.close()
        await manager.close()
