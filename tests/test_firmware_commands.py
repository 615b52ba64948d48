"""The dongle's command handler on the real MicroPython interpreter (unix port), attacked as a
hostile central would: wrong proofs, brute force, replays, bit flips, reflections, garbage.
The script tests/mpy/fw_commands.py drives firmware/dongle/commands.py with a recording
fake Actions and a fake clock; the expectations are here."""

from __future__ import annotations

import pytest

from protocol import control

AUTHED = ("3", "4", "5", "6", "7", "8", "9", "10", "11")


@pytest.fixture(scope="module")
def cases(run_mpy_json, micropython):
    return dict(run_mpy_json("fw_commands.py", timeout=120))


def test_hello_auth_happy_path_opens_a_session_that_executes_commands(cases):
    c = cases["happy"]
    assert c["hello"] == [control.OK, 7, "d0116e0000000042", bytes(range(100, 116)).hex()]
    assert c["auth"] == [control.OK, 8, True]  # the dongle proves it holds the secret too
    assert c["authenticated"] is True
    assert c["status"] == [control.OK, 9]
    assert c["ran"] == ["status"]


def test_wrong_proof_is_auth_failed_and_counted(cases):
    c = cases["wrong_proof"]
    assert c == {"status": control.AUTH_FAILED, "authenticated": False, "failures": 1, "ran": []}


def test_brute_force_meets_a_doubling_lockout_that_survives_reconnects(cases):
    c = cases["lockout"]
    assert c["free"] == [control.AUTH_FAILED] * 3
    assert c["fourth"] == control.AUTH_FAILED
    lengths = [lock[0] for lock in c["locks"]]
    assert lengths == [1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000, 300000, 300000, 300000]
    for length, during, late, at_end, authed in c["locks"]:
        # locked: even the right proof is refused, also after disconnected(), until the last ms
        assert (during, late) == (control.RATE_LIMITED, control.RATE_LIMITED), length
        assert at_end == control.AUTH_FAILED, length
        assert authed is False
    assert c["ok"] == control.OK and c["authenticated"] is True
    assert c["failures_after_success"] == 0
    assert c["total_failures"] == 4 + 12  # STATUS keeps the history for the owner to see
    assert c["ran"] == []


def test_a_lockout_set_just_before_the_clock_wraps_ends_on_time(cases):
    c = cases["lockout_wrap"]
    assert c["wrapped"] is True  # the lock's end lies past the wrap of the port's ticks
    assert c["late"] == control.RATE_LIMITED
    assert c["at_end"] == control.OK and c["authenticated"] is True


def test_one_guess_per_hello(cases):
    c = cases["one_guess"]
    assert c["first"] == control.AUTH_FAILED
    assert c["second"] == control.AUTH_FAILED  # the right proof, but the nonce was spent
    assert c["no_hello"] == control.AUTH_FAILED
    assert c["authenticated"] == [False, False]


def test_every_authenticated_command_is_refused_before_auth(cases):
    c = cases["refused_before_auth"]
    assert sorted(c) == sorted(AUTHED)
    for t, (forged, bare, after_hello, authed, ran) in c.items():
        assert (forged, bare, after_hello) == (control.NOT_AUTHENTICATED,) * 3, t
        assert authed is False and ran == [], t


def test_replayed_and_reordered_commands_are_rejected_and_not_executed(cases):
    c = cases["replay_reorder"]
    ok, nauth = control.OK, control.NOT_AUTHENTICATED
    assert c["statuses"] == [ok, nauth, ok, nauth, nauth]
    assert c["ran"] == ["status", "time"]


@pytest.mark.parametrize("kind", ["4", "6", "8"])
def test_every_single_bit_flip_of_a_command_is_rejected(cases, kind):
    c = cases["bitflip"][kind]
    assert sum(c["statuses"].values()) == c["bits"] > 100
    # refused (2), dropped as an unknown type (None), or a flip into AUTH's type that then
    # fails as a malformed AUTH (1): never executed
    assert set(c["statuses"]) <= {"2", "None", "1"}
    assert c["ran_during"] == []
    assert c["after"] == control.OK  # the genuine message still works afterwards
    assert len(c["ran"]) == 1


def test_reflected_messages_are_rejected(cases):
    c = cases["reflected"]
    assert c["before"] == ["status"]
    # a command MACed in the dongle's direction; the dongle's reply; that reply made a command
    assert c["statuses"] == [control.NOT_AUTHENTICATED] * 2 + [control.NOT_AUTHENTICATED]
    assert c["ran"] == []


def test_unknown_types_get_no_reply_and_do_nothing(cases):
    c = cases["unknown_types"]
    assert c["before"] == [None] * 7 and c["after"] == [None] * 7
    assert c["ran"] == [] and c["rejected"] == 14


def test_malformed_payloads_are_bad_request_and_not_executed(cases):
    c = cases["malformed"]
    assert len(c["session"]) == 17
    for kind, payload, status, maced in c["session"]:
        assert status == control.BAD_REQUEST, (kind, payload)
        assert maced, (kind, payload)  # inside a session even a refusal is authenticated
    assert c["ran"] == []
    # a short nonce, a HELLO with a counter, a reply sent as a command: BAD_REQUEST; a short
    # proof is a failed guess; bytes too short to name a command are dropped
    assert c["pre"] == [control.BAD_REQUEST] * 3 + [control.AUTH_FAILED, None, None]
    assert c["pre_ran"] == []


def test_fuzz_never_raises_and_executes_nothing(cases):
    c = cases["fuzz"]
    assert c["n"] == 6000
    assert c["raised"] == []
    assert c["replies"] > 1000 and c["bad_replies"] == 0  # every reply decodes as the daemon would
    assert c["ran"] == []
