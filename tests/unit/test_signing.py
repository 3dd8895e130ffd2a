"""Speaker commands: the central's signature, the speaker's checks (``speaker.trust``) and the
replay window, as plain values. The agent over a real broker: tests/integration/test_speaker.py.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import pytest

from central.config import Speech
from central.plans import SpeakerCommand
from central.speakers import command_payload
from speaker.trust import CommandGate
from wire.signing import CommandSigner, CommandVerifier, Window, generate_key

CENTRAL = CommandSigner(generate_key())
VERIFIER = CommandVerifier([CENTRAL.public_key])


def signed(priority: int = 5, *, site: str = "park", speaker: str = "spk-1",
           sent_at: float | None = None, cid: str = "c-1",
           signer: CommandSigner = CENTRAL) -> bytes:
    cmd = SpeakerCommand(speaker, "inc-1", Speech(text="请后退", priority=priority), 0)
    return command_payload(cmd, cid, time.time() if sent_at is None else sent_at, site=site,
                           signer=signer)


def tamper(payload: bytes, **changes: Any) -> bytes:
    return json.dumps(json.loads(payload) | changes, ensure_ascii=False).encode()


def gate() -> CommandGate:
    return CommandGate("park", "spk-1", verifier=VERIFIER, max_age_s=60.0, max_ahead_s=10.0)


def test_a_signed_command_plays_once() -> None:
    g = gate()
    body = signed()
    assert set(json.loads(body)) >= {"sig", "site", "speaker"}
    verdict = g.check(body)
    assert verdict.cmd is not None and verdict.cmd.priority == 5
    again = g.check(body)  # at-least-once redelivery: ignored, no report
    assert (again.cmd, again.state) == (None, None)
    assert not g.rejected


@pytest.mark.parametrize(("payload", "why"), [
    (lambda: tamper(signed(), sig=None), "unsigned"),
    (lambda: json.dumps({k: v for k, v in json.loads(signed()).items() if k != "sig"}
                        ).encode(), "unsigned"),
    (lambda: tamper(signed(), priority=9), "bad signature"),  # forged priority 9
    (lambda: tamper(signed(), text="免费门票"), "bad signature"),
    (lambda: tamper(signed(), sent_at=time.time() + 1e6), "bad signature"),
    (lambda: tamper(signed(), sig="!!not base64"), "malformed signature"),
    (lambda: signed(9, signer=CommandSigner(generate_key())), "bad signature"),  # other key
    (lambda: signed(site="fake-site"), "addressed to another speaker"),
    (lambda: signed(speaker="spk-2"), "addressed to another speaker"),
])
def test_forgeries_are_refused_and_counted(payload: Any, why: str) -> None:
    g = gate()
    verdict = g.check(payload())
    assert verdict.cmd is None
    assert (verdict.state, verdict.reason) == ("failed", f"refused: {why}")
    assert g.rejected == {why: 1}


def test_a_retained_command_never_plays_even_when_signed() -> None:
    g = gate()
    verdict = g.check(signed(9), retained=True)
    assert verdict.cmd is None and verdict.reason == "refused: retained"
    assert g.rejected == {"retained": 1}


@pytest.mark.parametrize(("offset", "reason"), [(-61.0, "stale"), (-3600.0, "stale"),
                                                (11.0, "future"), (10 * 365 * 86400, "future")])
def test_stale_and_future_commands_are_skipped(offset: float, reason: str) -> None:
    g = gate()
    verdict = g.check(signed(sent_at=time.time() + offset))
    assert verdict.cmd is None and (verdict.state, verdict.reason) == ("skipped", reason)


@pytest.mark.parametrize(("sent_at", "now", "expected"), [
    (100.0, 100.0, None), (41.0, 100.0, None), (39.0, 100.0, "stale"),
    (109.0, 100.0, None), (111.0, 100.0, "future"), (math.nan, 100.0, "stale"),
    (math.inf, 100.0, "future"), (-math.inf, 100.0, "stale"),
])
def test_replay_window(sent_at: float, now: float, expected: str | None) -> None:
    assert Window(60.0, 10.0).check("c", sent_at, now) == expected


def test_the_window_remembers_ids_until_they_are_stale() -> None:
    w = Window(60.0, 10.0)
    assert w.check("a", 100.0, 100.0) is None
    assert w.check("a", 100.0, 150.0) == "duplicate"
    assert w.check("a", 100.0, 170.0) == "stale"  # forgotten, and too old to play anyway
    assert w.check("b", 160.0, 170.0) is None


def test_without_a_key_plain_commands_play_but_misaddressed_ones_do_not() -> None:
    g = CommandGate("park", "spk-1", verifier=None)
    plain = command_payload(SpeakerCommand("spk-1", "i", Speech(text="好"), 0), "c-9",
                            time.time())
    assert g.check(plain).cmd is not None
    assert g.check(signed(site="elsewhere", cid="c-10")).reason == (
        "refused: addressed to another speaker")


def test_keys_load_from_pem_files(tmp_path: Any) -> None:
    from wire.signing import private_pem, public_pem

    key = generate_key()
    (tmp_path / "k").write_bytes(private_pem(key))
    (tmp_path / "k.pub").write_bytes(public_pem(key.public_key()))
    body = signed(signer=CommandSigner.load(tmp_path / "k"))
    assert CommandVerifier.load(tmp_path / "k.pub").check(json.loads(body)) is None
    with pytest.raises(ValueError, match="PEM"):
        CommandVerifier.load(tmp_path / "k")
