"""The call model on Asterisk behaviour beyond the shared captures: abandons, timeouts, transfers, resync."""

from datetime import UTC, datetime

from cti import events as ev
from cti.calls import AgentRinging, CallTracker, DirectionRules
from tests.cti.builder import Pbx

DID = "74951234567"


def inbound(pbx: Pbx, caller: str = "79160000101", name: str = "Ivan Petrov"):
    trunk = pbx.chan("trunk", num=caller, name=name, context="from-trunk", exten=DID, state=4)
    pbx.emit("Newchannel", trunk)
    return trunk


def ring(pbx: Pbx, trunk, extension: str, queue: str | None = None):
    agent = pbx.chan(extension, trunk.linkedid, name=f"Agent {extension}")
    pbx.emit("Newchannel", agent)
    if queue:
        pbx.emit("AgentCalled", trunk, agent, Queue=queue, Interface=f"PJSIP/{extension}")
    pbx.emit("DialBegin", trunk, agent, DialString=f"PJSIP/{extension}")
    pbx.state(agent, 5)
    return agent


def answer(pbx: Pbx, trunk, agent):
    pbx.state(agent, 6).emit("DialEnd", trunk, agent, DialStatus="ANSWER").state(trunk, 6)
    pbx.emit("BridgeEnter", agent, BridgeUniqueid="b1").emit("BridgeEnter", trunk, BridgeUniqueid="b1")


def test_caller_hangs_up_while_the_queue_rings_is_abandoned():
    pbx = Pbx()
    trunk = inbound(pbx)
    pbx.emit("QueueCallerJoin", trunk, Queue="sales", Position="1", Count="1")
    a101, a102 = ring(pbx, trunk, "101", "sales"), ring(pbx, trunk, "102", "sales")
    pbx.tick(6)
    pbx.emit("HangupRequest", trunk, Cause="127").emit("QueueCallerAbandon", trunk, Queue="sales", HoldTime="6")
    for agent in (a101, a102):
        pbx.emit("DialEnd", trunk, agent, DialStatus="CANCEL").hangup(agent, 0)
    pbx.hangup(trunk, 127)
    (call,), _ = pbx.run()
    assert (call.outcome, call.reason, call.agents_rang, call.queue, call.ring_seconds) == (
        "abandoned", "abandoned_while_ringing", ("101", "102"), "sales", 6)


def test_queue_timeout_is_missed_not_abandoned_although_asterisk_says_abandon():
    pbx = Pbx()
    trunk = inbound(pbx)
    pbx.emit("QueueCallerJoin", trunk, Queue="sales", Position="1", Count="1")
    a101, a102 = ring(pbx, trunk, "101", "sales"), ring(pbx, trunk, "102", "sales")
    pbx.tick(15)
    for agent in (a101, a102):
        pbx.emit("AgentRingNoAnswer", trunk, agent, Queue="sales", Interface=agent.name[:9], RingTime="15")
        pbx.emit("DialEnd", trunk, agent, DialStatus="NOANSWER").hangup(agent, 0)
    pbx.tick(15)
    # Queue(sales,tr,,,30) gives up: QueueCallerAbandon, then the dialplan's Hangup(19).
    pbx.emit("QueueCallerAbandon", trunk, Queue="sales", HoldTime="30")
    pbx.hangup(trunk, 19, far_end=False)
    (call,), _ = pbx.run()
    assert (call.outcome, call.reason, call.ring_seconds) == ("missed", "no_answer", 30)


def test_nobody_free_in_the_queue_is_missed_with_its_reason():
    pbx = Pbx()
    trunk = inbound(pbx)
    pbx.emit("QueueCallerJoin", trunk, Queue="sales", Position="1", Count="1").tick(30)
    pbx.emit("QueueCallerAbandon", trunk, Queue="sales", HoldTime="30").hangup(trunk, 19, far_end=False)
    (call,), _ = pbx.run()
    assert (call.outcome, call.reason, call.agents_rang) == ("missed", "no_agent_available", ())


def test_caller_hanging_up_during_the_greeting_is_abandoned_before_routing():
    pbx = Pbx()
    trunk = inbound(pbx)
    pbx.tick(4).hangup(trunk, 16, far_end=True)
    (call,), _ = pbx.run()
    assert (call.outcome, call.reason) == ("abandoned", "abandoned_before_routing")


def test_attended_transfer_through_local_channels_stays_one_call():
    pbx = Pbx()
    trunk = inbound(pbx)
    a101 = ring(pbx, trunk, "101")
    pbx.tick(2)
    answer(pbx, trunk, a101)
    pbx.tick(10)
    # Atxfer: Asterisk dials the target through Local/102@from-internal from 101's channel (same Linkedid).
    one, two = pbx.local_pair("102", trunk.linkedid)
    pbx.emit("Newchannel", one).emit("Newchannel", two)
    a102 = pbx.chan("102", trunk.linkedid, name="Agent 102")
    pbx.emit("Newchannel", a102).emit("DialBegin", two, a102, DialString="PJSIP/102").state(a102, 5)
    pbx.tick(3).state(a102, 6).emit("DialEnd", two, a102, DialStatus="ANSWER")
    pbx.emit("BridgeEnter", a102, BridgeUniqueid="b2").emit("BridgeEnter", two, BridgeUniqueid="b2")
    pbx.tick(5)
    pbx.emit("AttendedTransfer", None, prefixes={"OrigTransferer": a101, "SecondTransferer": a101,
                                                 "Transferee": trunk, "TransferTarget": one},
             Result="Success", DestType="Link")
    pbx.emit("BridgeLeave", a101, BridgeUniqueid="b1").emit("BridgeEnter", one, BridgeUniqueid="b1")
    pbx.hangup(a101, 16).emit("LocalOptimizationEnd", None, prefixes={"LocalOne": one, "LocalTwo": two})
    pbx.emit("BridgeEnter", a102, BridgeUniqueid="b1", SwapUniqueid=one.uniqueid)
    pbx.hangup(one, 16).hangup(two, 16)
    pbx.tick(20).hangup(trunk, 16, far_end=True).hangup(a102, 16)
    (call,), _ = pbx.run()
    assert (call.outcome, call.answered_by, call.agents_rang) == ("answered", "101", ("101", "102"))
    assert [(t.from_, t.to, t.kind) for t in call.transfers] == [("101", "102", "attended")]
    assert (call.ring_seconds, call.talk_seconds) == (2, 38)
    assert dict(call.talk_by_agent) == {"101": 18, "102": 25}  # each agent's leg, consultation included
    assert all(leg.kind == "local" for leg in call.legs if leg.channel.startswith("Local/"))


def test_consultation_call_of_a_phone_joins_the_customer_call():
    pbx = Pbx()
    trunk = inbound(pbx)
    a101 = ring(pbx, trunk, "101")
    pbx.tick(2)
    answer(pbx, trunk, a101)
    pbx.tick(5)
    # The phone puts the caller on hold and calls 102 itself: a new call with its own Linkedid.
    consult = pbx.chan("101", num="101", name="Agent 101", context="from-internal", exten="102", state=4)
    pbx.emit("Newchannel", consult)
    a102 = pbx.chan("102", consult.linkedid, name="Agent 102")
    pbx.emit("Newchannel", a102).emit("DialBegin", consult, a102, DialString="PJSIP/102").state(a102, 5)
    pbx.tick(2).state(a102, 6).emit("DialEnd", consult, a102, DialStatus="ANSWER")
    pbx.tick(4)
    pbx.emit("AttendedTransfer", None, prefixes={"OrigTransferer": a101, "SecondTransferer": consult,
                                                 "Transferee": trunk, "TransferTarget": a102},
             Result="Success", DestType="Bridge")
    pbx.hangup(a101, 16).hangup(consult, 16)
    pbx.tick(10).hangup(trunk, 16, far_end=True).hangup(a102, 16)
    calls, _ = pbx.run()
    assert len(calls) == 1, [c.call_id for c in calls]
    assert calls[0].call_id == trunk.linkedid
    assert [(t.from_, t.to, t.kind) for t in calls[0].transfers] == [("101", "102", "attended")]
    assert calls[0].agents_rang == ("101", "102")


def test_internal_call_answered():
    pbx = Pbx()
    a101 = pbx.chan("101", name="Agent 101", exten="102", state=4)
    pbx.emit("Newchannel", a101)
    a102 = pbx.chan("102", a101.linkedid, name="Agent 102")
    pbx.emit("Newchannel", a102).emit("DialBegin", a101, a102, DialString="PJSIP/102").state(a102, 5)
    pbx.tick(3).state(a102, 6).emit("DialEnd", a101, a102, DialStatus="ANSWER").state(a101, 6)
    pbx.emit("BridgeEnter", a102, BridgeUniqueid="b9").emit("BridgeEnter", a101, BridgeUniqueid="b9").tick(7)
    pbx.hangup(a102, 16, far_end=True).hangup(a101, 16)
    (call,), _ = pbx.run()
    assert (call.direction, call.caller, call.callee, call.outcome, call.answered_by) == (
        "internal", "101", "102", "answered", "102")
    assert (call.ring_seconds, call.talk_seconds) == (3, 7)


def test_outbound_from_a_phone_busy_far_end():
    pbx = Pbx()
    a101 = pbx.chan("101", name="Agent 101", exten="79161234567", state=4)
    pbx.emit("Newchannel", a101)
    out = pbx.chan("trunk", a101.linkedid, num="79161234567", context="from-trunk")
    pbx.emit("Newchannel", out).emit("DialBegin", a101, out, DialString="79161234567@trunk")
    pbx.tick(1).emit("DialEnd", a101, out, DialStatus="BUSY").hangup(out, 17).hangup(a101, 17, far_end=False)
    (call,), _ = pbx.run()
    assert (call.direction, call.caller, call.callee, call.outcome) == ("outbound", "101", "+79161234567", "busy")


def test_originate_the_agent_never_answers_is_failed():
    pbx = Pbx()
    a103 = pbx.chan("103", name="CTI 103")
    pbx.emit("Newchannel", a103).emit("DialBegin", None, a103, DialString="PJSIP/103").state(a103, 5)
    pbx.tick(30).emit("DialEnd", None, a103, DialStatus="NOANSWER").hangup(a103, 0)
    pbx.emit("OriginateResponse", None, ActionID="c2c-1", Response="Failure", Channel="PJSIP/103",
             Reason="3", Uniqueid="<null>")
    (call,), _ = pbx.run()
    assert (call.outcome, call.reason, call.originated) == ("failed", "agent_did_not_answer", True)


def test_one_extension_on_two_devices_rang_once():
    pbx = Pbx()
    trunk = inbound(pbx)
    desk = ring(pbx, trunk, "101")
    mobile = pbx.chan("101-mobile", trunk.linkedid, num="101")
    pbx.emit("Newchannel", mobile).emit("DialBegin", trunk, mobile, DialString="PJSIP/101-mobile")
    pbx.state(mobile, 5).tick(4)
    answer(pbx, trunk, mobile)
    pbx.emit("DialEnd", trunk, desk, DialStatus="CANCEL").hangup(desk, 26)
    pbx.tick(5).hangup(trunk, 16, far_end=True).hangup(mobile, 16)
    (call,), _ = pbx.run()
    assert (call.outcome, call.answered_by, call.agents_rang) == ("answered", "101", ("101",))


def test_call_that_ended_while_disconnected_is_closed_as_unknown_not_dropped():
    pbx = Pbx()
    tracker = CallTracker("t")
    trunk = inbound(pbx)
    ring(pbx, trunk, "101")
    assert pbx.run(tracker)[0] == []
    # Reconnect: FullyBooted, then the channel list is empty: everything ended while we were away.
    pbx.tick(30).emit("FullyBooted", None, timestamp=False).emit("CoreShowChannelsComplete", None, ActionID="r1")
    (call,), _ = pbx.run(tracker)
    assert (call.outcome, call.recovered, call.agents_rang) == ("unknown", True, ("101",))
    assert tracker.calls == {}


def test_answered_call_that_ended_while_disconnected_stays_answered():
    pbx = Pbx()
    tracker = CallTracker("t")
    trunk = inbound(pbx)
    agent = ring(pbx, trunk, "101")
    pbx.tick(2)
    answer(pbx, trunk, agent)
    pbx.run(tracker)
    pbx.tick(60).emit("FullyBooted", None).emit("CoreShowChannelsComplete", None)
    (call,), _ = pbx.run(tracker)
    assert (call.outcome, call.answered_by, call.recovered) == ("answered", "101", True)


def test_live_call_listed_after_reconnect_goes_on():
    pbx = Pbx()
    tracker = CallTracker("t")
    trunk = inbound(pbx)
    agent = ring(pbx, trunk, "101")
    pbx.tick(2)
    answer(pbx, trunk, agent)
    pbx.run(tracker)
    pbx.tick(5).emit("FullyBooted", None)
    pbx.emit("CoreShowChannel", trunk, ActionID="r1", Duration="00:00:07", Application="Dial")
    pbx.emit("CoreShowChannel", agent, ActionID="r1", Duration="00:00:07", Application="AppDial")
    pbx.emit("CoreShowChannelsComplete", None, ActionID="r1")
    assert pbx.run(tracker)[0] == []
    pbx.tick(10).hangup(trunk, 16, far_end=True).hangup(agent, 16)
    (call,), _ = pbx.run(tracker)
    assert (call.outcome, call.talk_seconds, call.recovered) == ("answered", 15, False)


def test_withheld_and_hostile_caller_ids_are_kept_as_given():
    pbx = Pbx()
    trunk = inbound(pbx, caller="anonymous", name="<img src=x onerror=alert(1)>")
    pbx.tick(3).hangup(trunk, 16, far_end=True)
    (call,), _ = pbx.run()
    assert (call.caller, call.caller_name, call.caller_e164) == (
        "anonymous", "<img src=x onerror=alert(1)>", None)


def test_only_ringing_agents_get_ringing_events():
    pbx = Pbx()
    trunk = inbound(pbx)
    ring(pbx, trunk, "101")
    _, emitted = pbx.run()
    assert [e.extension for e in emitted if isinstance(e, AgentRinging)] == ["101"]


def test_events_of_unknown_calls_and_garbage_change_nothing():
    pbx = Pbx()
    stray = pbx.chan("101", linkedid="999.1")
    pbx.hangup(stray, 16).emit("DialEnd", None, stray, DialStatus="ANSWER").emit("BlindTransfer", None)
    tracker = CallTracker("t")
    assert pbx.run(tracker) == ([], [])
    assert tracker.calls == {} and tracker.legs == {}


def test_atxfer_whose_local_channels_have_their_own_linkedid_is_still_one_call():
    pbx = Pbx()
    trunk = inbound(pbx)
    a101 = ring(pbx, trunk, "101")
    pbx.tick(2)
    answer(pbx, trunk, a101)
    pbx.tick(10)
    one, two = pbx.local_pair("102", "1795500099.77")  # a Linkedid of their own
    pbx.emit("Newchannel", one).emit("Newchannel", two)
    a102 = pbx.chan("102", "1795500099.77", name="Agent 102")
    pbx.emit("Newchannel", a102).emit("DialBegin", two, a102, DialString="PJSIP/102").state(a102, 5)
    pbx.tick(3).state(a102, 6).emit("DialEnd", two, a102, DialStatus="ANSWER").tick(5)
    pbx.emit("AttendedTransfer", None, prefixes={"OrigTransferer": a101, "SecondTransferer": a101,
                                                 "Transferee": trunk, "TransferTarget": one},
             Result="Success", DestType="Link")
    pbx.emit("BridgeLeave", a101, BridgeUniqueid="b1").emit("BridgeEnter", a102, BridgeUniqueid="b1")
    pbx.hangup(a101, 16).hangup(one, 16).hangup(two, 16)
    pbx.tick(20).hangup(trunk, 16, far_end=True).hangup(a102, 16)
    calls, _ = pbx.run()
    assert [c.call_id for c in calls] == [trunk.linkedid]
    call = calls[0]
    assert (call.outcome, call.answered_by, call.agents_rang) == ("answered", "101", ("101", "102"))
    assert [(t.from_, t.to, t.kind) for t in call.transfers] == [("101", "102", "attended")]
    assert dict(call.talk_by_agent) == {"101": 18, "102": 25}


def test_a_call_whose_agent_hangup_was_lost_is_closed_by_the_sweep():
    pbx = Pbx()
    tracker = CallTracker("t")
    trunk = inbound(pbx)
    agent = ring(pbx, trunk, "101")
    pbx.tick(2)
    answer(pbx, trunk, agent)
    pbx.tick(30).hangup(trunk, 16, far_end=True)  # the agent leg's Hangup never arrives
    assert pbx.run(tracker)[0] == []
    later = pbx.chan("trunk", num="79160000999", context="from-trunk", exten=DID, state=4)
    pbx.tick(600).emit("Newchannel", later)
    assert pbx.run(tracker)[0] == []  # a conference could still go on: not yet
    pbx.tick(1500).emit("Newchannel", pbx.chan("trunk", num="79160000998", context="from-trunk", exten=DID))
    calls, _ = pbx.run(tracker)
    assert [(c.call_id, c.outcome, c.talk_seconds, c.recovered) for c in calls] == [
        (trunk.linkedid, "answered", 30, True)]
    assert later.linkedid in tracker.calls


# ---------------------------------------------------------------- reconnects and stray boots

def _ringing_call(pbx: Pbx, tracker: CallTracker):
    trunk = inbound(pbx)
    agent = ring(pbx, trunk, "101")
    assert pbx.run(tracker)[0] == []
    return trunk, agent


def test_stray_fully_booted_on_a_live_session_closes_nothing():
    """A module reload sends FullyBooted (and someone's CoreShowChannelsComplete may follow) on a link
    that never dropped: the live calls go on and end normally."""
    pbx, tracker = Pbx(), CallTracker("t")
    pbx.emit(ev.SESSION_EVENT, None).emit("FullyBooted", None, Uptime="100", LastReload="100")
    trunk, agent = _ringing_call(pbx, tracker)
    pbx.tick(3).emit("FullyBooted", None, Uptime="103", LastReload="103")
    pbx.emit("CoreShowChannelsComplete", None, ActionID="someone-else")
    assert pbx.run(tracker)[0] == []
    answer(pbx, trunk, agent)
    pbx.tick(10).hangup(trunk, 16, far_end=True).hangup(agent, 16)
    (call,), _ = pbx.run(tracker)
    assert (call.outcome, call.answered_by, call.recovered, call.ring_seconds, call.talk_seconds) == (
        "answered", "101", False, 3, 10)


def test_a_pbx_restart_seen_by_uptime_resyncs_even_without_a_new_session():
    pbx, tracker = Pbx(), CallTracker("t")
    pbx.emit("FullyBooted", None, Uptime="5000")
    _ringing_call(pbx, tracker)
    pbx.tick(20).emit("FullyBooted", None, Uptime="3").emit("CoreShowChannelsComplete", None)
    (call,), _ = pbx.run(tracker)
    assert (call.outcome, call.recovered) == ("unknown", True)


def test_link_dropped_just_before_the_answer_is_still_an_answer_with_talk_time():
    """The answer happens while the AMI link is down; after the reconnect CoreShowChannel lists both legs
    Up in one bridge, and the Cdr at the end gives the exact answer time."""
    pbx, tracker = Pbx(), CallTracker("t")
    pbx.emit(ev.SESSION_EVENT, None).emit("FullyBooted", None, Uptime="100")
    trunk, agent = _ringing_call(pbx, tracker)
    started = pbx.now
    pbx.tick(4)  # the link drops here; the agent answers at +4.5 s unseen
    trunk.state = agent.state = 6
    pbx.tick(1).emit(ev.SESSION_EVENT, None).emit("FullyBooted", None, Uptime="105")
    for chan in (trunk, agent):
        pbx.emit("CoreShowChannel", chan, ActionID="r1", Duration="00:00:05", Application="Dial",
                 BridgeId="br-1")
    pbx.emit("CoreShowChannelsComplete", None, ActionID="r1")
    emitted = pbx.run(tracker)[1]
    assert "CallAnswered" in [type(e).__name__ for e in emitted]  # the popup learns it at the resync
    pbx.tick(20).hangup(trunk, 16, far_end=True).hangup(agent, 16)
    answer_wall = datetime.fromtimestamp(started + 4.5, UTC).strftime("%Y-%m-%d %H:%M:%S")
    end_wall = datetime.fromtimestamp(pbx.now, UTC).strftime("%Y-%m-%d %H:%M:%S")
    start_wall = datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%d %H:%M:%S")
    pbx.emit("Cdr", None, UniqueID=trunk.uniqueid, Channel=trunk.name, DestinationChannel=agent.name,
             Disposition="ANSWERED", StartTime=start_wall, AnswerTime=answer_wall, EndTime=end_wall,
             Duration="25", BillableSeconds="20")
    calls, _ = pbx.run(tracker)
    # Written at the hang-up with the answer dated by the resync, then again with the Cdr's answer time
    # (the writer upserts by call id, so the log keeps the second).
    assert [c.call_id for c in calls] == [trunk.linkedid] * 2
    assert (calls[0].outcome, calls[0].answered_by, calls[0].talk_seconds) == ("answered", "101", 20)
    call = calls[-1]
    assert (call.outcome, call.answered_by, call.reason) == ("answered", "101", "answered")
    assert (call.ring_seconds, call.talk_seconds) == (4, 21)


def test_answer_during_the_gap_without_a_cdr_is_still_answered():
    pbx, tracker = Pbx(), CallTracker("t")
    pbx.emit(ev.SESSION_EVENT, None).emit("FullyBooted", None, Uptime="100")
    trunk, agent = _ringing_call(pbx, tracker)
    pbx.tick(4)
    trunk.state = agent.state = 6
    pbx.tick(1).emit(ev.SESSION_EVENT, None).emit("FullyBooted", None, Uptime="105")
    for chan in (trunk, agent):
        pbx.emit("CoreShowChannel", chan, ActionID="r1", Duration="00:00:05", BridgeId="br-1")
    pbx.emit("CoreShowChannelsComplete", None, ActionID="r1")
    pbx.tick(30).hangup(trunk, 16, far_end=True).hangup(agent, 16)
    (call,), _ = pbx.run(tracker)
    assert (call.outcome, call.answered_by) == ("answered", "101")
    assert 30 <= call.talk_seconds <= 31


# ---------------------------------------------------------------- outcomes

def test_agents_rang_out_then_voicemail_and_the_caller_hangs_up_is_missed():
    pbx = Pbx()
    trunk = inbound(pbx)
    agent = ring(pbx, trunk, "101")
    pbx.tick(20).emit("DialEnd", trunk, agent, DialStatus="NOANSWER").hangup(agent, 0)
    pbx.state(trunk, 6).tick(25).hangup(trunk, 16, far_end=True)  # VoiceMail(): the caller leaves a message
    (call,), _ = pbx.run()
    assert (call.outcome, call.reason) == ("missed", "no_answer")


def test_queue_timeout_then_voicemail_is_missed_even_when_the_caller_hangs_up():
    pbx = Pbx()
    trunk = inbound(pbx)
    pbx.emit("QueueCallerJoin", trunk, Queue="sales", Position="1", Count="1")
    agent = ring(pbx, trunk, "101", "sales")
    pbx.tick(30).emit("DialEnd", trunk, agent, DialStatus="CANCEL").hangup(agent, 0)
    pbx.emit("QueueCallerAbandon", trunk, Queue="sales", HoldTime="30")
    pbx.tick(15).hangup(trunk, 16, far_end=True)
    (call,), _ = pbx.run()
    assert (call.outcome, call.reason) == ("missed", "no_answer")


def test_caller_cancel_without_hangup_request_is_abandoned():
    """Asterisk 13 chan_sip streams often lack HangupRequest: the caller's own Dial says CANCEL."""
    pbx = Pbx()
    a201 = pbx.chan("150010001", num="201", exten="202", state=4, tech="SIP")
    pbx.emit("Newchannel", a201)
    a202 = pbx.chan("150010002", a201.linkedid, num="202", tech="SIP")
    pbx.emit("Newchannel", a202).emit("DialBegin", a201, a202, DialString="150010002").state(a202, 5)
    pbx.tick(5).emit("DialEnd", a201, a202, DialStatus="CANCEL").hangup(a202, 16).hangup(a201, 0)
    (call,), _ = pbx.run()
    assert (call.direction, call.caller, call.callee, call.outcome) == ("internal", "201", "202", "abandoned")


def test_stream_without_bridge_events_still_answers():
    """An AMI user whose eventfilter drops Bridge* events: the caller's own Dial answered decides."""
    pbx, tracker = Pbx(), CallTracker("t")
    for _ in range(2):
        trunk = inbound(pbx)
        agent = ring(pbx, trunk, "101")
        pbx.tick(2).state(agent, 6).emit("DialEnd", trunk, agent, DialStatus="ANSWER").state(trunk, 6)
        pbx.tick(8).hangup(trunk, 16, far_end=True).hangup(agent, 16)
    calls, _ = pbx.run(tracker)
    assert [(c.outcome, c.answered_by, c.talk_seconds) for c in calls] == [("answered", "101", 8)] * 2


def test_failed_originate_keeps_the_number_dialled():
    pbx = Pbx()
    a103 = pbx.chan("103", name="CTI 103")
    pbx.emit("Newchannel", a103).emit("DialBegin", None, a103, DialString="PJSIP/103").state(a103, 5)
    pbx.tick(30).emit("DialEnd", None, a103, DialStatus="NOANSWER").hangup(a103, 0)
    pbx.tick(0.1).emit("OriginateResponse", None, ActionID="c2c-1", Response="Failure", Channel="PJSIP/103",
                       Context="from-internal", Exten="89161234567", Reason="3", Uniqueid="<null>")
    (call,), _ = pbx.run()
    assert (call.direction, call.caller, call.callee, call.outcome, call.reason) == (
        "outbound", "103", "+79161234567", "failed", "agent_did_not_answer")


def test_failed_originate_without_a_response_is_still_written():
    pbx, tracker = Pbx(), CallTracker("t")
    a103 = pbx.chan("103", name="CTI 103")
    pbx.emit("Newchannel", a103).emit("DialBegin", None, a103, DialString="PJSIP/103").state(a103, 5)
    pbx.tick(30).hangup(a103, 0)
    assert pbx.run(tracker)[0] == []  # waiting a moment for OriginateResponse
    pbx.tick(10).emit("Newchannel", pbx.chan("trunk", num="79160000999", context="from-trunk", exten=DID))
    (call,), _ = pbx.run(tracker)
    assert (call.outcome, call.originated) == ("failed", True)


# ---------------------------------------------------------------- who is a phone

def test_phone_named_by_account_is_reported_by_its_users_extension():
    pbx = Pbx()
    trunk = inbound(pbx)
    phone = pbx.chan("150010001", trunk.linkedid, num="+74951234567", tech="SIP")
    pbx.emit("Newchannel", phone).emit("DialBegin", trunk, phone, DialString="SIP/150010001").state(phone, 5)
    pbx.tick(2).state(phone, 6).emit("DialEnd", trunk, phone, DialStatus="ANSWER")
    pbx.emit("BridgeEnter", phone, BridgeUniqueid="b").emit("BridgeEnter", trunk, BridgeUniqueid="b")
    pbx.tick(5).hangup(trunk, 16, far_end=True).hangup(phone, 16)
    configured = CallTracker("t")
    configured.set_devices({"sip/150010001": "201"})
    (call,), emitted = pbx.run(configured)
    assert (call.outcome, call.answered_by, call.agents_rang) == ("answered", "201", ("201",))
    assert [e.extension for e in emitted if isinstance(e, AgentRinging)] == ["201"]


def test_unconfigured_trunk_is_known_from_the_pbx_endpoint_list():
    """PJSIPShowEndpoints: an endpoint with OutboundAuths is a line to the operator, whatever its name."""
    pbx, tracker = Pbx(), CallTracker("t", DirectionRules(trunk_endpoints=frozenset()))
    pbx.emit("EndpointList", None, ObjectName="mts", OutboundAuths="mts-auth", Auths="")
    pbx.emit("EndpointList", None, ObjectName="101", Auths="101", OutboundAuths="")
    line = pbx.chan("mts", num="101", context="default", exten="74951234567", state=4)
    pbx.emit("Newchannel", line)
    agent = ring(pbx, line, "101")
    pbx.tick(2)
    answer(pbx, line, agent)
    pbx.tick(3).hangup(line, 16, far_end=True).hangup(agent, 16)
    (call,), _ = pbx.run(tracker)
    assert (call.direction, call.caller, call.answered_by) == ("inbound", "101", "101")


def test_local_queue_member_is_the_agent_behind_it():
    """FreePBX queues ring Local/201@from-queue/n; the phone behind it is agent 201."""
    pbx = Pbx()
    trunk = inbound(pbx)
    pbx.emit("QueueCallerJoin", trunk, Queue="400", Position="1", Count="1")
    one, two = pbx.local_pair("201", trunk.linkedid)
    pbx.emit("Newchannel", one).emit("Newchannel", two)
    pbx.emit("AgentCalled", trunk, one, Queue="400", Interface="Local/201@from-queue/n")
    pbx.emit("DialBegin", trunk, one, DialString="Local/201@from-queue/n")
    phone = pbx.chan("acc7001", trunk.linkedid, num="201")
    pbx.emit("Newchannel", phone).emit("DialBegin", two, phone, DialString="PJSIP/acc7001").state(phone, 5)
    pbx.tick(3).state(phone, 6).emit("DialEnd", two, phone, DialStatus="ANSWER").state(two, 6).state(one, 6)
    pbx.emit("DialEnd", trunk, one, DialStatus="ANSWER")
    pbx.emit("BridgeEnter", phone, BridgeUniqueid="b2").emit("BridgeEnter", two, BridgeUniqueid="b2")
    pbx.emit("BridgeEnter", one, BridgeUniqueid="b1").emit("BridgeEnter", trunk, BridgeUniqueid="b1")
    pbx.tick(9).hangup(trunk, 16, far_end=True).hangup(one, 16).hangup(two, 16).hangup(phone, 16)
    (call,), _ = pbx.run()
    assert (call.outcome, call.answered_by, call.agents_rang, call.ring_seconds, call.talk_seconds) == (
        "answered", "201", ("201",), 3, 9)
    assert [leg.kind for leg in call.legs] == ["trunk", "local", "local", "agent"]


def test_pickup_without_a_dial_to_the_picker_is_one_call_answered_by_the_picker():
    """Some Asterisk versions bridge the picker (*8 from 103) straight in, with its own Linkedid."""
    pbx = Pbx()
    trunk = inbound(pbx)
    ringing = ring(pbx, trunk, "101")
    pbx.tick(3)
    picker = pbx.chan("103", num="103", exten="*8", state=4)
    pbx.emit("Newchannel", picker).state(picker, 6)
    pbx.emit("DialEnd", trunk, ringing, DialStatus="CANCEL").hangup(ringing, 26)
    pbx.emit("BridgeEnter", picker, BridgeUniqueid="p").emit("BridgeEnter", trunk, BridgeUniqueid="p")
    pbx.tick(7).hangup(trunk, 16, far_end=True).hangup(picker, 16)
    calls, _ = pbx.run()
    assert [(c.call_id, c.outcome, c.answered_by, c.talk_seconds) for c in calls] == [
        (trunk.linkedid, "answered", "103", 7)]
