import time

import jwt
import pytest

from pulse.auth import InvalidTokenError, TokenExpiredError, issue_token, verify_token

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


def test_round_trip_keeps_subject_and_roles() -> None:
    claims = verify_token(issue_token(SECRET, sub="alice", roles=["ops"]), SECRET)
    assert claims.sub == "alice"
    assert claims.is_ops


def test_expired_token_is_told_apart() -> None:
    token = jwt.encode({"sub": "a", "exp": int(time.time()) - 10}, SECRET, algorithm="HS256")
    with pytest.raises(TokenExpiredError):
        verify_token(token, SECRET)


@pytest.mark.parametrize(
    "token",
    [
        jwt.encode({"sub": "a"}, SECRET, algorithm="HS256"),  # no exp
        jwt.encode(
            {"sub": "a", "exp": 2**40}, "another-secret-also-long-enough-xx", algorithm="HS256"
        ),
        jwt.encode({"sub": "a", "exp": 2**40}, SECRET * 2, algorithm="HS512"),
        jwt.encode({"sub": "a", "exp": 2**40, "roles": "ops"}, SECRET, algorithm="HS256"),
        "not.a.token",
    ],
)
def test_bad_tokens_are_refused(token: str) -> None:
    with pytest.raises(InvalidTokenError):
        verify_token(token, SECRET)


def test_alg_none_is_refused() -> None:
    token = jwt.encode({"sub": "a", "exp": 2**40}, "", algorithm="none")
    with pytest.raises(InvalidTokenError):
        verify_token(token, SECRET)
