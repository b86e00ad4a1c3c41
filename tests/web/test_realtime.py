"""socket.io with real clients: authentication, rooms, screen-pops that follow the call; recordings."""

import wave

import pytest
import socketio

from tests.conftest import login
from tests.web.live import SocketUser, session_cookie


async def test_a_socket_without_a_session_is_refused(live):
    base_url, _, _ = live
    user = SocketUser()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await user.connect(base_url, None)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await user.connect(base_url, "forged-session")


async def test_the_ringing_manager_gets_the_popup_and_nobody_else(live):
    base_url, sim, _ = live
    manager1, manager2, head = SocketUser(), SocketUser(), SocketUser()
    await manager1.connect(base_url, await session_cookie(base_url, "manager1"))
    await manager2.connect(base_url, await session_cookie(base_url, "manager2"))
    await head.connect(base_url, await session_cookie(base_url, "head"))
    try:
        sim.place_call("74951234567", "101", 0.5, 0.5, caller_name="<img src=x onerror=alert(1)>")
        popup = await manager1.wait_for("popup", lambda p: p["complete"])  # the index's card may come first
        assert (popup["display"], popup["contact"]["name"], popup["company"]["name"], popup["manager"]) == (
            "+7 495 123-45-67", "Demo Client", "Demo Industries LLC", "Manager One")
        assert popup["caller_name"] == "<img src=x onerror=alert(1)>"  # data; the browser renders it as text
        await manager1.wait_for("popup_update", lambda u: u["state"] == "answered" and u["answered_by"] == "101")
        ended = await manager1.wait_for("popup_update", lambda u: u["state"] == "ended")
        assert ended["outcome"] == "answered"
        await head.wait_for("agent_state", lambda s: s["extension"] == "101")
        await head.wait_for("call_logged")
        assert manager2.events("popup") == [] and manager2.events("popup_update") == []
        assert head.events("popup") == []  # the head's phone (100) did not ring
    finally:
        for user in (manager1, manager2, head):
            await user.close()


async def test_queue_call_others_popups_close_with_answered_by(live):
    base_url, sim, _ = live
    manager1, manager2 = SocketUser(), SocketUser()
    await manager1.connect(base_url, await session_cookie(base_url, "manager1"))
    await manager2.connect(base_url, await session_cookie(base_url, "manager2"))
    try:
        sim.play(sim.writer.queue("79169990000", "", ("101", "102"), 0.6, 0.5))
        for user in (manager1, manager2):
            popup = await user.wait_for("popup", lambda p: p["complete"])  # the number first, then the lead
            assert popup["lead"] is not None and popup["contact"] is None  # an unknown caller is a new lead
        stopped = await manager1.wait_for("popup_update", lambda u: u["state"] == "stopped")
        assert stopped["answered_by"] == "102"
        await manager2.wait_for("popup_update", lambda u: u["state"] == "answered")
    finally:
        await manager1.close()
        await manager2.close()


def write_wav(path, seconds: float = 1.0) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x00\x01" * int(8000 * seconds))


async def test_recordings_stream_with_range_to_those_allowed_only(client, conn, factory, settings):
    manager1 = await factory.user("manager1", extension="101")
    await factory.user("manager2", extension="102")
    await factory.user("head", role="head")
    await factory.contact("Mine", manager=manager1, phones=["+7 916 000-01-01"])
    call_id = await conn.fetchval("""INSERT INTO calls (pbx, linkedid, direction, caller, caller_e164, callee,
        started_at, ended_at, outcome, ring_seconds, talk_seconds, recording, user_id) VALUES ('lab', '1.1',
        'inbound', '+79160000101', '+79160000101', '+74951234567', now(), now(), 'answered', 2, 3,
        '/var/spool/asterisk/monitor/20261123-rec-1.1.wav', $1) RETURNING id""", manager1.id)
    settings.recordings_path.mkdir(parents=True)
    write_wav(settings.recordings_path / "20261123-rec-1.1.wav")
    (settings.recordings_path.parent / "secret.wav").write_bytes(b"not for you")
    await login(client, "manager1")
    full = await client.get(f"/recordings/{call_id}")
    assert (full.status, full.content_type) == (200, "audio/wav")
    part = await client.get(f"/recordings/{call_id}", headers={"Range": "bytes=0-99"})
    assert part.status == 206 and len(await part.read()) == 100
    assert (await client.get("/recordings/999999")).status == 404
    # A path stored on a call can never reach outside the recordings directory.
    await conn.execute("UPDATE calls SET recording = '../secret.wav' WHERE id = $1", call_id)
    assert (await client.get(f"/recordings/{call_id}")).status == 404
    await conn.execute("UPDATE calls SET recording = 'missing.wav' WHERE id = $1", call_id)
    assert (await client.get(f"/recordings/{call_id}")).status == 404
    await conn.execute("UPDATE calls SET recording = '20261123-rec-1.1.wav' WHERE id = $1", call_id)
    await client.post("/logout", data={"csrf_token": await login(client, "manager1")})
    await login(client, "manager2")
    assert (await client.get(f"/recordings/{call_id}")).status == 404
    await login(client, "head")
    assert (await client.get(f"/recordings/{call_id}")).status == 200


async def test_after_a_transfer_the_first_agents_popup_says_so_and_follows_the_call_no_further(live):
    """Issue 15: the popup of the agent who transferred stayed 'In call' until the customer hung up."""
    base_url, sim, _ = live
    manager1, manager2 = SocketUser(), SocketUser()
    await manager1.connect(base_url, await session_cookie(base_url, "manager1"))
    await manager2.connect(base_url, await session_cookie(base_url, "manager2"))
    try:
        sim.play(sim.writer.transfer("79169990011", "", "101", "102", 0.3, 0.4))
        await manager1.wait_for("popup")
        await manager1.wait_for("popup_update", lambda u: u["state"] == "answered")
        away = await manager1.wait_for("popup_update", lambda u: u["state"] == "transferred_away")
        assert away["answered_by"] == "102"
        await manager2.wait_for("popup")
        await manager2.wait_for("popup_update", lambda u: u["state"] == "ended")
        assert [u for u in manager1.events("popup_update") if u["state"] == "ended"] == []
        assert [u for u in manager2.events("popup_update") if u["state"] == "transferred_away"] == []
    finally:
        await manager1.close()
        await manager2.close()
