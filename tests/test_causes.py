"""app/causes.py: the one table from a cause to what the client sees and how it is counted."""

from __future__ import annotations

from http import HTTPStatus

from app.causes import CLOSE_LABELS, ENDINGS, REFUSAL_LABELS, Cause, CloseCode, Refusal, client_cause


def test_close_codes_match_the_contract() -> None:
    assert {c.name: int(c) for c in CloseCode} == {
        "NORMAL": 1000,
        "GOING_AWAY": 1001,
        "PROTOCOL_ERROR": 1002,
        "NO_STATUS": 1005,
        "ABNORMAL": 1006,
        "INVALID_DATA": 1007,
        "POLICY": 1008,
        "TOO_BIG": 1009,
        "INTERNAL_ERROR": 1011,
        "SERVICE_RESTART": 1012,
        "TRY_AGAIN_LATER": 1013,
        "BAD_REQUEST": 4400,
        "UNAUTHENTICATED": 4401,
        "FORBIDDEN": 4403,
        "SLOW_CONSUMER": 4008,
    }


def test_every_cause_has_one_row() -> None:
    assert set(ENDINGS) == set(Cause)


def test_the_public_label_vocabularies() -> None:
    # Dashboards and alerts select on these: values may be added, never renamed.
    assert set(REFUSAL_LABELS) == {
        "bad_request",
        "too_large",
        "timeout",
        "overload",
        "forbidden",
        "unauthenticated",
        "rate_limited",
        "draining",
        "broker_unavailable",
        "error",
    }
    assert set(CLOSE_LABELS) == {
        "client",
        "client_error",
        "drain",
        "shed",
        "slow_consumer",
        "unauthenticated",
        "keepalive",
        "bad_request",
        "policy",
        "too_big",
        "invalid_data",
        "error",
        "other",
    }


def test_refusals_before_the_upgrade_are_http_only_and_the_rest_have_close_codes() -> None:
    for cause, ending in ENDINGS.items():
        HTTPStatus(ending.status)  # a real status
        assert len(ending.reason.encode()) <= 123, cause  # fits a close frame
        if ending.before_upgrade:
            assert ending.refusal and ending.code is None, cause
        elif cause not in (Cause.CLIENT, Cause.CLIENT_ERROR):
            assert ending.code is not None, cause


def test_the_table_rows_the_contract_names() -> None:
    expected = {
        Cause.SLOW_CONSUMER: (CloseCode.SLOW_CONSUMER, "slow_consumer"),
        Cause.DRAIN: (CloseCode.SERVICE_RESTART, "drain"),
        Cause.SHED: (CloseCode.SERVICE_RESTART, "shed"),
        Cause.OVERLOAD: (CloseCode.TRY_AGAIN_LATER, "overload"),
        Cause.UNAUTHENTICATED: (CloseCode.UNAUTHENTICATED, "unauthenticated"),
        Cause.FORBIDDEN: (CloseCode.FORBIDDEN, "forbidden"),
        Cause.BAD_QUERY: (CloseCode.BAD_REQUEST, "bad_request"),
        Cause.INVALID_UTF8: (CloseCode.INVALID_DATA, "invalid_data"),
        Cause.TOO_MANY_MESSAGES: (CloseCode.POLICY, "policy"),
    }
    for cause, (code, label) in expected.items():
        assert (cause.code, cause.label) == (code, label)
    assert (Cause.ORIGIN.ending.status, Cause.ORIGIN.code) == (403, None)
    assert Cause.HEAD_TOO_LARGE.ending.status == 431
    assert Cause.HANDSHAKE_TIMEOUT.ending.status == 408


def test_client_closes() -> None:
    assert client_cause(None) is Cause.CLIENT
    assert client_cause(1000) is Cause.CLIENT and client_cause(1001) is Cause.CLIENT
    assert client_cause(4000) is Cause.CLIENT_ERROR


def test_a_refusal_carries_its_code_status_and_a_short_reason() -> None:
    refusal = Refusal(Cause.FORBIDDEN, "x" * 500)
    assert refusal.code == CloseCode.FORBIDDEN and refusal.status == 403
    assert len(refusal.reason) == 120
    assert Refusal(Cause.DRAINING).reason == "draining: reconnect to another replica"
