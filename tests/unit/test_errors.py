"""Named errors (hub/errors.py): Centrifugo's codes, and a fresh exception per raise."""

from __future__ import annotations

import pytest

from pushgate.hub.errors import (
    ErrorBadRequest,
    ErrorPermissionDenied,
    ErrorTooManyRequests,
    HubError,
)


def test_each_raise_is_its_own_exception_so_no_traceback_piles_up():
    def deny() -> None:
        raise ErrorPermissionDenied

    caught = []
    for _ in range(3):
        with pytest.raises(HubError) as info:
            deny()
        caught.append(info.value)
    assert len({id(error) for error in caught}) == 3
    # a shared instance raised again would keep every earlier traceback (and its frames)
    depth, tb = 0, caught[-1].__traceback__
    while tb is not None:
        depth, tb = depth + 1, tb.tb_next
    assert depth <= 2


def test_named_errors_carry_centrifugo_codes_and_a_precise_message_when_given():
    assert (ErrorPermissionDenied().code, ErrorPermissionDenied().message) == (
        103,
        "permission denied",
    )
    error = ErrorBadRequest("bad request: channel must be a string")
    assert (error.code, error.message, error.temporary) == (
        107,
        "bad request: channel must be a string",
        False,
    )
    assert ErrorTooManyRequests().temporary
