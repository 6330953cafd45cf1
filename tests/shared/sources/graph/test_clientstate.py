from __future__ import annotations

from shared.sources.graph.clientstate import make_client_state, new_secret, verify_client_state


def test_round_trip_and_length():
    secret = new_secret().encode()
    value = make_client_state(secret, "0123456789abcdef")
    assert len(value) <= 128
    assert verify_client_state(secret, value) == "0123456789abcdef"


def test_differs_per_subscription():
    secret = b"k" * 32
    assert make_client_state(secret, "a" * 16) != make_client_state(secret, "a" * 16)


def test_refuses_other_secret_tampering_and_junk():
    secret, other = b"k" * 32, b"x" * 32
    value = make_client_state(secret, "a" * 16)
    assert verify_client_state(other, value) is None
    tampered = value.replace("v1." + "a" * 16, "v1." + "b" * 16)
    assert verify_client_state(secret, tampered) is None
    for junk in (None, 42, "", "v1.a.b", "v2." + value[3:], value + "x", "x" * 200):
        assert verify_client_state(secret, junk) is None
