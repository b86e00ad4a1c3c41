"""The frame splitter and parser under hostile input: never crash, never lose the valid messages after."""

from hypothesis import given, settings
from hypothesis import strategies as st

from cti import events as ev

VALID = (b"Event: Hangup\r\nTimestamp: 1795448071.412806\r\nChannel: PJSIP/101-00000003\r\n"
         b"Uniqueid: 1795448064.3\r\nLinkedid: 1795448064.2\r\nCallerIDName: \xd0\x98\xd0\xb2\xd0\xb0\xd0\xbd\r\n"
         b"Cause: 16\r\n\r\n")


def _events(chunks: list[bytes]) -> list[ev.AmiEvent]:
    splitter = ev.FrameSplitter()
    out = []
    for chunk in chunks:
        for raw in splitter.feed(chunk):
            event = ev.parse_event(raw)
            if event is not None:
                out.append(event)
    return out


def test_utf8_character_split_across_reads_survives():
    cut = VALID.index(b"\xd0\x98") + 1  # inside 'И'
    events = _events([VALID[:cut], VALID[cut:]])
    assert events[0].channel.caller_name == "Иван"


def test_banner_and_login_response_are_not_events():
    splitter = ev.FrameSplitter()
    raws = splitter.feed(b"Asterisk Call Manager/11.0.0\r\nResponse: Success\r\nActionID: 1\r\n\r\n" + VALID)
    assert splitter.banner == "Asterisk Call Manager/11.0.0"
    # The banner becomes a synthetic session event (a new AMI session began), then the login response.
    assert raws[0].startswith(f"Event: {ev.SESSION_EVENT}\r\n")
    assert type(ev.parse_event(raws[0])).__name__ == "SessionStarted"
    assert raws[1].startswith("Response: Success")
    assert [type(e).__name__ for e in _events([VALID])] == ["ChannelHungUp"]


def test_noise_is_dropped_by_name_before_parsing():
    assert not ev.is_wanted("Event: Newexten\r\nChannel: x")
    assert not ev.is_wanted("Event: VarSet\r\nVariable: FOO\r\nValue: 1")
    assert ev.is_wanted("Event: VarSet\r\nChannel: x\r\nVariable: MIXMONITOR_FILENAME\r\nValue: /a.wav")
    assert ev.parse_event("Event: RTCPSent\r\nChannel: x") is None


def test_oversized_message_is_dropped_and_the_stream_recovers():
    splitter = ev.FrameSplitter()
    splitter.feed(b"Event: VarSet\r\nValue: " + b"x" * (ev.MAX_MESSAGE_CHARS + 10))
    assert splitter.dropped_oversize == 1
    assert len(_events([b"\r\n\r\n" + VALID])) == 1


@settings(max_examples=300, deadline=None)
@given(junk=st.binary(max_size=2000), cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=8))
def test_random_bytes_before_a_valid_message_never_crash_and_never_hide_it(junk, cuts):
    stream = junk + b"\r\n\r\n" + VALID + VALID
    points = sorted({c % (len(stream) + 1) for c in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    events = _events(chunks)
    hangups = [e for e in events if isinstance(e, ev.ChannelHungUp) and e.channel.uniqueid == "1795448064.3"]
    assert len(hangups) >= 2
    assert hangups[-1].channel.caller_name == "Иван"


@settings(max_examples=200, deadline=None)
@given(headers=st.dictionaries(st.text(min_size=1, max_size=30).filter(lambda k: "\r" not in k and "\n" not in k),
                               st.text(max_size=5000).filter(lambda v: "\r\n\r\n" not in v), max_size=30),
       name=st.sampled_from(sorted(ev.KEPT_EVENTS)))
def test_any_header_set_for_a_kept_event_parses_or_is_skipped(headers, name):
    raw = f"Event: {name}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    event = ev.parse_event(raw.rstrip("\r\n"))
    assert event is None or isinstance(event, ev.AmiEvent)


@given(st.binary(max_size=300))
def test_mixed_encodings_decode_to_replacement_characters(data):
    text_events = _events([b"Event: Newchannel\r\nChannel: PJSIP/1-1\r\nUniqueid: 1.1\r\nCallerIDName: " + data
                           .replace(b"\r", b"").replace(b"\n", b"") + b"\r\n\r\n" + VALID])
    assert any(isinstance(e, ev.ChannelHungUp) for e in text_events)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=40).filter(lambda line: "\r\n" not in line), max_size=20))
def test_fast_header_parse_agrees_with_the_careful_one(lines):
    raw = "\r\n".join(lines)
    careful = ev._parse_headers_carefully(raw)
    fast = ev.parse_headers(raw)
    assert fast == careful


_GROUP_KEYS = ("Uniqueid", "Channel", "Linkedid", "ChannelState", "CallerIDNum", "CallerIDName", "ConnectedLineNum",
               "Context", "Exten")


@settings(max_examples=300, deadline=None)
@given(prefix=st.sampled_from(["", "Dest", "LocalOne"]),
       values=st.lists(st.one_of(st.none(), st.sampled_from(["", "0", "6", "x", "1795448064.3", "PJSIP/101-0000000f"]),
                                 st.text(max_size=8), st.just("²")), min_size=9, max_size=9))
def test_a_channel_group_with_headers_missing_or_empty_reads_as_the_careful_lookup(prefix, values):
    # The whole group is fetched in one call; a missing header must fall back to the per-key lookup
    # (Linkedid defaults to Uniqueid, the rest to "", a non-numeric state to 0), never change a value.
    headers = {prefix + key: value for key, value in zip(_GROUP_KEYS, values, strict=True) if value is not None}
    assert ev._channel(headers, prefix) == ev._channel_carefully(headers, prefix)
    if not headers.get(prefix + "Uniqueid") or not headers.get(prefix + "Channel"):
        assert ev._channel(headers, prefix) is None
