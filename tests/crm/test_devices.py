"""Users' devices: normalised names, one owner each, a device map, NOTIFY on change; user updates that hold."""

import asyncio

import pytest

from crm import devices, users
from crm.errors import Conflict, NotFound, ValidationError
from tests.crm.test_routing_index import eventually


def test_device_names_are_normalised_to_tech_and_endpoint():
    typed = {
        "SIP/150010001": "SIP/150010001",
        " sip/150010001 ": "SIP/150010001",
        "SIP/150010001-0000003c": "SIP/150010001",
        "pjsip/acc7001": "PJSIP/acc7001",
        "PJSIP/acc7001-00000a1F": "PJSIP/acc7001",
        "PJSIP/office-trunk-0000000a": "PJSIP/office-trunk",
        "PJSIP/Reception.2": "PJSIP/Reception.2",
        "iax2/branch": "IAX2/branch",
        "dahdi/1-1": "DAHDI/1",
        "skinny/desk": "Skinny/desk",
    }
    assert {text: devices.normalise_device(text) for text in typed} == typed


@pytest.mark.parametrize("junk", ["", "150010001", "SIP/", "SIP/150 010", "Local/201@from-queue/n;1",
                                  "Local/201@from-queue", "Message/ast_msg_queue", "Parked/201",
                                  "SIP/trunk/8800", "PJSIP/101@host", "Foo/bar", "SIP/-0000003c", "x" * 300])
def test_junk_is_refused_with_a_message_that_says_how(junk):
    with pytest.raises(ValidationError) as caught:
        devices.normalise_device(junk)
    assert caught.value.field == "devices"
    assert "TECH/endpoint" in caught.value.message or "is not a phone" in caught.value.message
    assert len(caught.value.message) < 200


def test_plumbing_is_named_as_such():
    with pytest.raises(ValidationError) as caught:
        devices.normalise_device("Local/201@from-queue/n;1")
    assert caught.value.message.startswith("'Local/201@from-queue/n;1' is not a phone: Local is not one of DAHDI,")


def test_device_of_a_channel_and_plumbing():
    channels = {
        "SIP/150010002-00000042": "SIP/150010002",
        "PJSIP/101-00000003": "PJSIP/101",
        "Local/201@from-queue-00000001;1": None,
        "Message/ast_msg_queue": None,
        "Parked/SIP/150010001-00000001": None,
        "": None,
    }
    assert {c: devices.device_of_channel(c) for c in channels} == channels


def test_a_form_field_of_several_devices():
    assert devices.parse_devices("sip/150010001, PJSIP/acc7001\nSIP/150010001-0000003c ") == [
        "SIP/150010001", "PJSIP/acc7001"]
    assert devices.parse_devices(["SIP/1", " ", "pjsip/2"]) == ["SIP/1", "PJSIP/2"]
    with pytest.raises(ValidationError):
        devices.parse_devices(["SIP/1", 7])
    with pytest.raises(ValidationError):
        devices.parse_devices([f"SIP/{n}" for n in range(devices.MAX_DEVICES + 1)])


async def test_a_device_belongs_to_one_person_and_the_map_shows_active_extensions(conn, factory):
    ivanov = await users.create_user(conn, "ivanov", "secret", "manager", "101", "Ivan Ivanov",
                                     devices=["sip/150010001", "PJSIP/acc7001"])
    assert (ivanov.devices, ivanov.version) == (("PJSIP/acc7001", "SIP/150010001"), 1)
    petrov = await factory.user("petrov", extension="102")
    with pytest.raises(Conflict) as caught:
        await devices.add_device(conn, petrov.id, "SIP/150010001-0000003c")
    assert str(caught.value) == "SIP/150010001 is already the device of Ivan Ivanov (ivanov)"
    assert await devices.add_device(conn, petrov.id, "sip/150010002") == "SIP/150010002"
    assert await devices.add_device(conn, petrov.id, "SIP/150010002") == "SIP/150010002"  # a second click
    nobody = await factory.user("noext")
    await devices.add_device(conn, nobody.id, "SIP/150010009")
    assert await devices.list_device_map(conn) == {
        "SIP/150010001": "101", "PJSIP/acc7001": "101", "SIP/150010002": "102"}
    await users.update_user(conn, ivanov.id, "manager", "101", "Ivan Ivanov", False)
    assert await devices.list_device_map(conn) == {"SIP/150010002": "102"}
    assert await devices.remove_device(conn, petrov.id, "SIP/150010002") is True
    assert await devices.remove_device(conn, petrov.id, "SIP/150010002") is False
    assert await devices.list_devices(conn, petrov.id) == []
    with pytest.raises(NotFound):
        await devices.add_device(conn, 999_999, "SIP/1")


async def test_creating_a_user_with_someone_elses_device_creates_nobody(conn, factory):
    owner = await factory.user("owner", extension="101")
    await devices.add_device(conn, owner.id, "SIP/150010001")
    with pytest.raises(Conflict):
        await users.create_user(conn, "late", "secret", "manager", "102", "Late", devices=["SIP/150010001"])
    assert await users.get_user_by_login(conn, "late") is None


async def test_updating_devices_replaces_them_and_bumps_the_version(conn, factory):
    user = await factory.user("ivanov", extension="101")
    other = await factory.user("petrov", extension="102")
    await devices.add_device(conn, other.id, "PJSIP/acc7002")
    assert (await users.get_user(conn, user.id)).version == 1
    await devices.add_device(conn, user.id, "SIP/150010001")
    assert (await users.get_user(conn, user.id)).version == 2
    updated = await users.update_user(conn, user.id, "manager", "101", "Ivan", True, version=2,
                                      devices="PJSIP/acc7001 SIP/150010003")
    assert (updated.devices, updated.version) == (("PJSIP/acc7001", "SIP/150010003"), 3)
    assert await users.get_user(conn, user.id) == updated
    with pytest.raises(Conflict) as caught:
        await users.update_user(conn, user.id, "manager", "101", "Ivan", True, version=3,
                                devices=["PJSIP/acc7001", "PJSIP/acc7002"])
    assert "PJSIP/acc7002 is already the device of Petrov (petrov)" in str(caught.value)
    assert await users.get_user(conn, user.id) == updated  # nothing of the refused update stayed
    # Without `devices` an update leaves them alone.
    kept = await users.update_user(conn, user.id, "head", "101", "Ivan", True)
    assert (kept.devices, kept.version, kept.role) == (updated.devices, 4, "head")


async def test_a_stale_version_is_refused(conn, factory):
    user = await factory.user("ivanov", extension="101")
    await users.update_user(conn, user.id, "manager", "101", "First", True, version=user.version)
    with pytest.raises(Conflict) as caught:
        await users.update_user(conn, user.id, "manager", "101", "Second", True, version=user.version)
    assert "changed this user meanwhile" in str(caught.value)
    assert (await users.get_user(conn, user.id)).display_name == "First"


async def test_two_identical_updates_at_once_give_one_result(pool, conn, factory):
    user = await factory.user("ivanov", extension="101")

    async def update() -> users.User | Exception:
        async with pool.acquire() as own:
            try:
                return await users.update_user(own, user.id, "head", "103", "Ivan", True, version=user.version,
                                               devices=["SIP/150010001"])
            except Conflict as exc:
                return exc

    for _ in range(5):
        # A fresh start each round: the same version, the same edit, sent twice at once.
        user = await users.update_user(conn, user.id, "manager", "101", "Ivan", True, devices=[])
        results = await asyncio.gather(update(), update())
        done = [r for r in results if isinstance(r, users.User)]
        refused = [r for r in results if isinstance(r, Conflict)]
        assert (len(done), len(refused)) == (1, 1), results
        assert done[0] == await users.get_user(conn, user.id)
        assert (done[0].version, done[0].devices, done[0].extension) == (user.version + 1, ("SIP/150010001",),
                                                                         "103")


async def test_device_changes_are_notified(pool, conn, factory):
    user = await factory.user("ivanov", extension="101")
    received: list[str] = []
    def notified(connection, pid, channel, payload):
        received.append(payload)

    async with pool.acquire() as listener:
        await listener.add_listener(devices.CHANNEL, notified)
        await devices.add_device(conn, user.id, "SIP/150010001")
        await eventually(lambda: received == ["device:SIP/150010001"])
        await users.update_user(conn, user.id, "manager", "101", "Renamed", True)  # the map does not change
        await users.update_user(conn, user.id, "manager", "105", "Renamed", True)
        await eventually(lambda: received[1:] == [f"user:{user.id}"])
        await devices.remove_device(conn, user.id, "SIP/150010001")
        await eventually(lambda: received[2:] == ["device:SIP/150010001"])
        await asyncio.sleep(0.1)
        assert received == ["device:SIP/150010001", f"user:{user.id}", "device:SIP/150010001"]
        await listener.remove_listener(devices.CHANNEL, notified)


async def test_the_device_map_is_kept_current_without_polling(pool, conn, factory):
    user = await factory.user("ivanov", extension="101")
    await devices.add_device(conn, user.id, "SIP/150010001")
    maps: list[dict[str, str]] = []
    watcher = asyncio.create_task(devices.watch_device_map(pool, maps.append, retry_seconds=0.1))
    try:
        await eventually(lambda: maps == [{"SIP/150010001": "101"}])
        await devices.add_device(conn, user.id, "PJSIP/acc7001")
        await eventually(lambda: maps[-1] == {"SIP/150010001": "101", "PJSIP/acc7001": "101"})
        await users.update_user(conn, user.id, "manager", "105", "Ivan", True)
        await eventually(lambda: maps[-1] == {"SIP/150010001": "105", "PJSIP/acc7001": "105"})
        # The listener's connection dies: the map is reloaded on a new one, changes keep coming.
        seen = len(maps)
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        await devices.remove_device(conn, user.id, "SIP/150010001")
        await eventually(lambda: len(maps) > seen and maps[-1] == {"PJSIP/acc7001": "105"}, timeout=10)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
