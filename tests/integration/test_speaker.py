"""SpeakerAgent against a real Mosquitto and a real espeak-ng; HttpSpeaker against http.server.

Every agent test uses its own site, so a shared broker cannot disturb it, and wipes the
agent's persistent session afterwards. Synchronisation is by waiting on queues with
timeouts, never by sleeping.
"""

from __future__ import annotations

import http.server
import json
import math
import os
import queue
import shutil
import struct
import sys
import threading
import time
import uuid
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from central.config import Speech
from central.plans import SpeakerCommand
from central.speakers import HttpSpeaker, command_payload
from common.net import free_port
from speaker.agent import SpeakerAgent
from speaker.audio import SpeakerError
from wire import topics
from wire.messages import CommandMessage, parse_status
from wire.signing import CommandSigner, CommandVerifier, generate_key

TIMEOUT = 10.0
COMMA = "\uff0c"  # the full-width comma of real Chinese text (spelled out for ruff)
SHORT = f"危险{COMMA}请后退"  # about 1.5 s
LONG = COMMA.join(["请注意", "前方是悬崖", "非常危险", "请立即后退", "不要靠近栏杆。"]) * 4  # ~25 s

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                reason="espeak-ng not installed (apt-get install espeak-ng)")


def unique(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}"


def wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


class Bench:
    """A unique site: an agent factory, a status listener and a command publisher."""

    def __init__(self, broker: tuple[str, int], tmp: Path):
        self.host, self.port = broker
        self.site = unique("spk")
        self.tmp = tmp
        self.out_dir = tmp / "out"
        self.agents: list[SpeakerAgent] = []
        self.statuses: queue.Queue[dict[str, Any]] = queue.Queue()
        self.availability: queue.Queue[str] = queue.Queue()
        ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("bench"),
                                  protocol=MQTTProtocolVersion.MQTTv311)
        self.client.on_connect = lambda c, *a: c.subscribe(
            [(topics.speaker_status_filter(self.site), 1),
             (f"perimeter/v1/{self.site}/speaker/+/availability", 1)])
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.on_message = self._on_message
        self.client.connect(self.host, self.port)
        self.client.loop_start()
        assert ready.wait(TIMEOUT), "bench subscription not acknowledged"

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/availability"):
            self.availability.put(msg.payload.decode())
        else:
            self.statuses.put(json.loads(msg.payload))

    def agent(self, speaker: str = "spk-1", **kw: Any) -> SpeakerAgent:
        kw.setdefault("out_dir", self.out_dir)
        a = SpeakerAgent(speaker, self.host, self.port, site=self.site, **kw)
        a.start()
        self.agents.append(a)
        return a

    def send(self, speaker: str = "spk-1", *, raw: bytes | None = None,
             signer: CommandSigner | None = None, retain: bool = False, **fields: Any) -> str:
        """Publish a command (signed by ``signer`` and addressed to this site and ``speaker``
        when given); its id."""
        cid = fields.pop("command_id", unique("c"))
        if raw is None:
            body = {"command_id": cid, "incident": "inc-1", "text": SHORT, "clip": None,
                    "voice": "cmn-latn-pinyin", "priority": 5, "repeat": 1,
                    "sent_at": time.time()} | fields
            if signer is not None:
                body = signer.sign({"site": self.site, "speaker": speaker} | body)
            raw = json.dumps(body, ensure_ascii=False).encode()
        info = self.client.publish(topics.speaker_command(self.site, speaker), raw, qos=1,
                                   retain=retain)
        info.wait_for_publish(TIMEOUT)
        return str(cid)

    def expect(self, command_id: str | None, state: str,
               timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next status of ``command_id``, which must be in ``state``."""
        s = self.next_for(command_id, timeout)
        assert s["state"] == state, f"expected {state}, got {s}"
        return s

    def next_for(self, command_id: str | None, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next status of ``command_id``; fails after ``timeout``. Statuses of other
        commands that arrive meanwhile are kept for later calls."""
        deadline = time.monotonic() + timeout
        kept: list[dict[str, Any]] = []
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"no status for {command_id} within {timeout}s "
                                f"(others: {kept})")
                try:
                    s = self.statuses.get(timeout=left)
                except queue.Empty:
                    continue
                if s["command_id"] != command_id:
                    kept.append(s)
                    continue
                return s
        finally:
            for s in kept:
                self.statuses.put(s)

    def close(self) -> None:
        for a in self.agents:
            a.close()
        for a in self.agents:  # leave no retained message on a shared broker
            self.client.publish(a.availability_topic, b"", qos=1, retain=True).wait_for_publish(
                TIMEOUT)
        self.client.disconnect()
        self.client.loop_stop()
        for a in self.agents:  # wipe the persistent session left on the broker
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=a.client_id,
                            clean_session=True, protocol=MQTTProtocolVersion.MQTTv311)
            c.connect(self.host, self.port)
            c.disconnect()


@pytest.fixture
def bench(mqtt_broker: tuple[str, int], tmp_path: Path) -> Iterator[Bench]:
    b = Bench(mqtt_broker, tmp_path)
    try:
        yield b
    finally:
        b.close()


def test_mandarin_text_is_spoken_to_a_wav(bench: Bench) -> None:
    bench.agent()
    assert bench.availability.get(timeout=TIMEOUT) == "online"
    cid = bench.send(text=f"请注意{COMMA}前方悬崖危险")
    playing = bench.expect(cid, "playing")
    assert playing["speaker"] == "spk-1" and playing["reason"] is None
    bench.expect(cid, "done")
    files = list(bench.out_dir.glob(f"*-{cid}.wav"))
    assert len(files) == 1
    assert wav_seconds(files[0]) > 0.3
    bench.agents[0].close()
    assert bench.availability.get(timeout=TIMEOUT) == "offline"


def test_same_priority_in_cooldown_is_skipped_higher_plays(bench: Bench) -> None:
    bench.agent(cooldown_s=10.0)
    first = bench.send(text="好", priority=4)
    second = bench.send(text="好", priority=4)
    bench.expect(first, "playing")
    assert bench.expect(second, "skipped")["reason"] == "cooldown"
    bench.expect(first, "done")
    lower = bench.send(text="好", priority=3)  # after it finished, within the cooldown
    assert bench.expect(lower, "skipped")["reason"] == "cooldown"
    higher = bench.send(text="好", priority=5)
    bench.expect(higher, "playing")
    bench.expect(higher, "done")


def test_cooldown_expires(bench: Bench) -> None:
    bench.agent(cooldown_s=0.2)
    first = bench.send(text="好")
    bench.expect(first, "playing")
    bench.expect(first, "done")
    deadline = time.monotonic() + TIMEOUT
    while True:  # poll: resend until the cooldown is over
        again = bench.send(text="好")
        s = bench.next_for(again)
        if s["state"] == "playing":
            bench.expect(again, "done")
            return
        assert (s["state"], s["reason"]) == ("skipped", "cooldown")
        assert time.monotonic() < deadline, "cooldown never expired"
        time.sleep(0.05)  # poll interval, not a synchronisation delay


def test_higher_priority_preempts_long_text(bench: Bench) -> None:
    bench.agent(cooldown_s=10.0, speaker="spk-2")
    long_id = bench.send("spk-2", text=LONG, priority=3, repeat=2)
    bench.expect(long_id, "playing")
    urgent = bench.send("spk-2", text=SHORT, priority=9)
    assert bench.expect(long_id, "skipped")["reason"] == "preempted"
    bench.expect(urgent, "playing")
    bench.expect(urgent, "done")
    long_file = next(bench.out_dir.glob(f"*-{long_id}.wav"))
    assert wav_seconds(long_file) < 10.0  # cut short, the file holds what was played
    assert wav_seconds(next(bench.out_dir.glob(f"*-{urgent}.wav"))) > 0.3


def test_malformed_commands_fail_and_the_agent_keeps_working(bench: Bench) -> None:
    clips = bench.tmp / "clips"
    clips.mkdir()
    bench.agent(cooldown_s=0.0, clips_dir=clips)
    bench.send(raw=b"{not json")
    s = bench.expect(None, "failed")
    assert "not JSON" in s["reason"]
    bench.send(raw=b"[1, 2]")
    assert "not a JSON object" in bench.expect(None, "failed")["reason"]
    missing = unique("m")
    bench.send(raw=json.dumps({"command_id": missing, "text": "好"}).encode())
    reason = bench.expect(missing, "failed")["reason"]
    assert "incident" in reason and "priority" in reason
    trav = bench.send(text=None, clip="../../etc/passwd")
    assert "clip" in bench.expect(trav, "failed")["reason"]
    nothing = bench.send(text=None, clip=None)
    assert "text or a clip" in bench.expect(nothing, "failed")["reason"]
    loud = bench.send(priority=42)
    assert "priority" in bench.expect(loud, "failed")["reason"]
    voice = bench.send(voice="--help")
    assert "voice" in bench.expect(voice, "failed")["reason"]
    for name in ("no-such-voice", "cmn-latn-pinyn", "cmn-latn-pinyin+nobody"):
        typo = bench.send(voice=name)  # espeak-ng itself would fall back to another voice
        assert "unknown espeak-ng voice" in bench.expect(typo, "failed")["reason"]
    no_clip = bench.send(text=None, clip="absent.wav")
    assert "not found" in bench.expect(no_clip, "failed")["reason"]
    old = bench.send(sent_at=time.time() - 3600)
    assert bench.expect(old, "skipped")["reason"] == "stale"
    ok = bench.send(text="好")
    bench.expect(ok, "playing")
    bench.expect(ok, "done")
    bench.send(command_id=ok, text="好")  # redelivery of the same id: ignored
    later = bench.send(text="好")
    bench.expect(later, "playing")  # the duplicate produced no status in between
    bench.expect(later, "done")


def test_clip_is_played_and_repeated(bench: Bench) -> None:
    clips = bench.tmp / "clips"
    (clips / "chimes").mkdir(parents=True)
    with wave.open(str(clips / "chimes" / "ding.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i / 8)))
                               for i in range(3200)))  # 0.2 s
    bench.agent(cooldown_s=0.0, clips_dir=clips)
    cid = bench.send(text=None, clip="chimes/ding.wav", repeat=2)
    bench.expect(cid, "playing")
    bench.expect(cid, "done")
    seconds = wav_seconds(next(bench.out_dir.glob(f"*-{cid}.wav")))
    assert seconds == pytest.approx(0.2 + 0.5 + 0.2, abs=0.01)
    fallback = bench.send(text="好", clip="missing.wav")  # no such clip here: the text
    bench.expect(fallback, "playing")
    bench.expect(fallback, "done")


def test_commands_sent_while_offline_are_delivered_on_restart(bench: Bench) -> None:
    bench.agent(cooldown_s=0.0).close()  # creates the persistent session, then goes away
    assert bench.availability.get(timeout=TIMEOUT) == "online"
    assert bench.availability.get(timeout=TIMEOUT) == "offline"
    cid = bench.send(text="好")  # queued by the broker for the absent speaker
    bench.agent(cooldown_s=0.0)
    bench.expect(cid, "playing")
    bench.expect(cid, "done")


CENTRAL = CommandSigner(generate_key())


def test_forged_commands_never_play_and_do_not_block_real_ones(bench: Bench) -> None:
    """Issue 10 row 5: anyone who could publish made the speaker talk, and a forged priority-9
    command blocked real warnings through its cooldown."""
    agent = bench.agent(cooldown_s=30.0, verifier=CommandVerifier([CENTRAL.public_key]))
    impostor = CommandSigner(generate_key())
    unsigned = bench.send(text="免费门票，请到售票处领取", priority=9)
    assert bench.expect(unsigned, "failed")["reason"] == "refused: unsigned"
    other_key = bench.send(priority=9, signer=impostor)
    assert bench.expect(other_key, "failed")["reason"] == "refused: bad signature"
    wrong = unique("c")  # signed by the central, but for another speaker: replayed here
    bench.send(raw=json.dumps(CENTRAL.sign(
        {"site": bench.site, "speaker": "spk-9", "command_id": wrong, "incident": "i",
         "text": "好", "clip": None, "voice": "cmn-latn-pinyin", "priority": 9, "repeat": 1,
         "sent_at": time.time()}), ensure_ascii=False).encode())
    assert bench.expect(wrong, "failed")["reason"] == "refused: addressed to another speaker"
    real = bench.send(text="好", priority=5, signer=CENTRAL)  # not in anyone's cooldown
    bench.expect(real, "playing")
    bench.expect(real, "done")
    assert agent.rejected == {"unsigned": 1, "bad signature": 1,
                              "addressed to another speaker": 1}
    assert [p.name for p in bench.out_dir.glob("*.wav")] == [
        p.name for p in bench.out_dir.glob(f"*-{real}.wav")]  # the only clip written


def test_a_retained_forged_command_never_plays_not_even_at_restart(bench: Bench) -> None:
    """Issue 10 row 5: a retained forged command with a future ``sent_at`` played again at
    every speaker restart."""
    forged = bench.send(text="免费门票", priority=9, sent_at=time.time() + 10 * 365 * 86400,
                        retain=True)
    try:
        for _ in range(2):  # the broker hands the retained command to every new session
            agent = bench.agent(cooldown_s=0.0)
            assert bench.expect(forged, "failed")["reason"] == "refused: retained"
            assert agent.rejected == {"retained": 1}
            agent.close()
            bench.agents.remove(agent)
        bench.agent(cooldown_s=0.0)
        later = bench.send(text="好", sent_at=time.time() + 3600)  # not retained, future
        assert bench.expect(later, "skipped")["reason"] == "future"
        assert not list(bench.out_dir.glob("*.wav"))
    finally:
        bench.client.publish(topics.speaker_command(bench.site, "spk-1"), b"", qos=1,
                             retain=True).wait_for_publish(TIMEOUT)


FAKE_APLAY = """#!{python}
import sys, time, wave
if "{mode}" == "broken":
    sys.exit("aplay: main:831: audio open error: No such file or directory")
with wave.open(sys.argv[-1]) as w:
    time.sleep(w.getnframes() / w.getframerate())
"""


@pytest.mark.parametrize("mode", ["ok", "broken"])
def test_device_playback_with_aplay(bench: Bench, mode: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    fake = bench.tmp / "bin"
    fake.mkdir()
    (fake / "aplay").write_text(FAKE_APLAY.format(python=sys.executable, mode=mode))
    (fake / "aplay").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    bench.agent(out_dir=None, device=True, cooldown_s=0.0)
    long_id = bench.send(text=LONG, priority=1)
    bench.expect(long_id, "playing")
    if mode == "broken":
        assert "audio open error" in bench.expect(long_id, "failed")["reason"]
        return
    urgent = bench.send(text="好", priority=9)
    assert bench.expect(long_id, "skipped")["reason"] == "preempted"  # aplay terminated
    bench.expect(urgent, "playing")
    bench.expect(urgent, "done")
    assert not bench.out_dir.exists()


def test_missing_programs_fail_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    agent = SpeakerAgent("spk-1", site=unique("spk"), out_dir=tmp_path / "out")
    with pytest.raises(SpeakerError, match="apt-get install espeak-ng"):
        agent.check()
    agent = SpeakerAgent("spk-1", site=unique("spk"), device=True)
    monkeypatch.setenv("PATH", os.path.dirname(shutil.which("espeak-ng", path=os.defpath)
                                               or "/usr/bin"))
    if shutil.which("aplay") is None:
        with pytest.raises(SpeakerError, match="apt-get install alsa-utils"):
            agent.check()
    with pytest.raises(ValueError, match="output"):
        SpeakerAgent("spk-1")


def test_command_payload_round_trip() -> None:
    speech = Speech(text="请注意", priority=7, repeat=2)
    body = command_payload(SpeakerCommand("spk-1", "inc-9", speech, 0), "c-1", 1700000000.0)
    msg = CommandMessage.model_validate_json(body)
    assert (msg.command_id, msg.incident, msg.text, msg.clip, msg.voice, msg.priority,
            msg.repeat, msg.sent_at) == ("c-1", "inc-9", "请注意", None, "cmn-latn-pinyin", 7,
                                         2, 1700000000.0)
    with pytest.raises(ValueError):
        command_payload(SpeakerCommand("spk-1", "inc-9", speech, 0), "bad/id", 0.0)
    s = parse_status(b'{"command_id": "c-1", "speaker": "spk-1", "state": "done", '
                     b'"reason": null, "at": 1.0}')
    assert s.state == "done"


# -- HttpSpeaker -------------------------------------------------------------------------------


@pytest.fixture
def http_speaker_server() -> Iterator[tuple[str, queue.Queue[tuple[dict[str, str], bytes]],
                                            Callable[[list[int]], None]]]:
    """(url, received requests, set the answer codes to give in turn, then 204)."""
    received: queue.Queue[tuple[dict[str, str], bytes]] = queue.Queue()
    codes: list[int] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.put((dict(self.headers.items()), body))
            self.send_response(codes.pop(0) if codes else 204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield (f"http://127.0.0.1:{server.server_address[1]}/speak", received,
               lambda c: codes.extend(c))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


def test_http_speaker_posts_the_command(
        http_speaker_server: tuple[str, queue.Queue[tuple[dict[str, str], bytes]],
                                   Callable[[list[int]], None]]) -> None:
    url, received, answer = http_speaker_server
    cmd = SpeakerCommand("ip-1", "inc-3", Speech(text="请后退", priority=8), 1)
    spk = HttpSpeaker("ip-1", url, token="s3cret", backoff_s=0.01)
    assert spk.send(cmd, "c-http-1")
    headers, body = received.get(timeout=TIMEOUT)
    assert headers["Authorization"] == "Bearer s3cret"
    assert headers["Content-Type"].startswith("application/json")
    data = json.loads(body)
    assert data["command_id"] == "c-http-1" and data["text"] == "请后退"
    assert data["priority"] == 8 and data["incident"] == "inc-3"
    assert set(data) == {"command_id", "incident", "text", "clip", "voice", "priority",
                         "repeat", "sent_at"}

    answer([503, 500])  # retried, then accepted
    assert spk.send(cmd, "c-http-2")
    ids = [json.loads(received.get(timeout=TIMEOUT)[1])["command_id"] for _ in range(3)]
    assert ids == ["c-http-2"] * 3

    answer([400])  # a refusal is final
    assert not spk.send(cmd, "c-http-3")
    received.get(timeout=TIMEOUT)
    assert received.empty()


def test_http_speaker_dead_url_returns_false() -> None:
    cmd = SpeakerCommand("ip-1", "inc-3", Speech(text="请后退"), 0)
    spk = HttpSpeaker("ip-1", f"http://127.0.0.1:{free_port()}/speak", timeout_s=1.0,
                      backoff_s=0.01)
    start = time.monotonic()
    assert spk.send(cmd, "c-dead") is False
    assert time.monotonic() - start < 5.0
