"""Wrong maintainer passwords are limited per client address: 5 a minute, then waits that double,
during which even the right password is refused; an injected clock stands in for the waits."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from classifr.app.access import (
    MaintainerLockedOutError,
    NotAMaintainerError,
    PasswordAttempts,
    require_maintainer,
)
from classifr.core.config import Settings

PASSWORD = "s3cret-horse"
ATTACKER, FRIEND = "203.0.113.7", "198.51.100.2"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def attempts(clock) -> PasswordAttempts:
    return PasswordAttempts(clock=clock)


def _settings(**changes) -> Settings:
    return replace(Settings(home=Path("/nonexistent")), admin_password=PASSWORD, **changes)


def _try(attempts: PasswordAttempts, password: str, client: str = ATTACKER, **kwargs) -> str:
    return require_maintainer(_settings(**kwargs), password=password, attempts=attempts, client=client)


def _fail(attempts: PasswordAttempts, times: int, client: str = ATTACKER) -> None:
    for _ in range(times):
        with pytest.raises(NotAMaintainerError, match="Wrong maintainer password"):
            _try(attempts, "guess", client)


def test_the_fifth_wrong_password_in_a_minute_locks_the_address_out_and_names_the_wait(attempts):
    _fail(attempts, 4)
    with pytest.raises(MaintainerLockedOutError, match=r"too many wrong passwords from this address; try again in 30 s") as err:
        _try(attempts, "guess")
    assert err.value.retry_after_s == 30.0
    with pytest.raises(MaintainerLockedOutError, match="try again in 30 s"):
        _try(attempts, "another guess")


def test_another_address_is_not_affected(attempts):
    _fail(attempts, 4)
    with pytest.raises(MaintainerLockedOutError):
        _try(attempts, "guess")
    assert _try(attempts, PASSWORD, FRIEND) == "password"
    _fail(attempts, 4, FRIEND)  # and it has its own 5


def test_the_right_password_is_refused_during_a_lockout_then_works_after_the_wait(attempts, clock):
    _fail(attempts, 4)
    with pytest.raises(MaintainerLockedOutError):
        _try(attempts, "guess")
    clock.advance(29)
    with pytest.raises(MaintainerLockedOutError, match="try again in 1 s"):
        _try(attempts, PASSWORD)  # no oracle: refused without being compared
    clock.advance(1)
    assert _try(attempts, PASSWORD) == "password"


def test_waits_double_after_each_further_failure_up_to_fifteen_minutes(attempts, clock):
    _fail(attempts, 4)
    waits = []
    for _ in range(8):
        with pytest.raises(MaintainerLockedOutError) as err:
            _try(attempts, "guess")
        waits.append(err.value.retry_after_s)
        clock.advance(err.value.retry_after_s)  # the wait is over: the next guess is compared again
    assert waits == [30, 60, 120, 240, 480, 900, 900, 900]
    with pytest.raises(MaintainerLockedOutError, match="try again in 15 min"):
        _try(attempts, "guess")


def test_a_wait_in_minutes_is_rounded_up(attempts, clock):
    _fail(attempts, 4)
    for _ in range(3):  # locked for 30, 60 and 120 s, each wait sat out
        with pytest.raises(MaintainerLockedOutError) as err:
            _try(attempts, "guess")
        clock.advance(err.value.retry_after_s)
    with pytest.raises(MaintainerLockedOutError, match="try again in 4 min"):
        _try(attempts, "guess")  # 240 s
    clock.advance(10)
    with pytest.raises(MaintainerLockedOutError, match="try again in 4 min"):
        _try(attempts, PASSWORD)  # 230 s left


def test_a_success_resets_the_address(attempts, clock):
    _fail(attempts, 4)
    assert _try(attempts, PASSWORD) == "password"
    _fail(attempts, 4)  # 4 more are free again
    with pytest.raises(MaintainerLockedOutError, match="30 s"):
        _try(attempts, "guess")
    clock.advance(30)
    assert _try(attempts, PASSWORD) == "password"
    _fail(attempts, 4)  # and the doubling starts over
    with pytest.raises(MaintainerLockedOutError, match="30 s"):
        _try(attempts, "guess")


def test_failures_older_than_a_minute_do_not_count(attempts, clock):
    for _ in range(10):
        _fail(attempts, 4)
        clock.advance(61)
    assert _try(attempts, PASSWORD) == "password"


def test_memory_is_bounded_whoever_sends_passwords(clock):
    attempts = PasswordAttempts(clock=clock, max_clients=100)
    for n in range(1000):
        _fail(attempts, 1, client=f"10.0.{n // 256}.{n % 256}")
    assert len(attempts) == 100
    clock.advance(attempts.max_wait_s + 1)
    _fail(attempts, 1, client="192.0.2.1")
    assert len(attempts) == 1  # quiet addresses are forgotten


def test_parallel_guesses_cannot_pass_the_limit(attempts):
    compared = []

    def guess() -> None:
        try:
            attempts.verify(ATTACKER, lambda: compared.append(1) or False)
        except MaintainerLockedOutError:
            pass

    threads = [threading.Thread(target=guess) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(compared) == 5


def test_a_hub_sign_in_still_works_during_a_lockout(attempts):
    class Hub:
        def whoami(self, token=None):
            return {"name": "ada", "orgs": [{"name": "classifr-team"}]}

    settings = _settings(maintainer_org="classifr-team")
    _fail(attempts, 4)
    with pytest.raises(MaintainerLockedOutError):
        _try(attempts, "guess")
    assert require_maintainer(settings, password="guess", oauth_token="t", hf_api=Hub(), attempts=attempts,
                              client=ATTACKER) == "org:classifr-team"


def test_calls_without_a_password_are_not_counted(attempts):
    for _ in range(20):
        with pytest.raises(NotAMaintainerError, match="Wrong maintainer password"):
            _try(attempts, "")
    assert len(attempts) == 0
    assert _try(attempts, PASSWORD) == "password"


def test_failures_are_logged_with_the_address_and_never_the_password(attempts, caplog):
    caplog.set_level(logging.INFO, logger="classifr.app.access")
    _fail(attempts, 4)
    with pytest.raises(MaintainerLockedOutError):
        _try(attempts, "guess")
    with pytest.raises(MaintainerLockedOutError):
        _try(attempts, PASSWORD)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 6 and all(ATTACKER in line for line in lines), lines
    assert "locked out for 30 s" in lines[4] and "refused unchecked" in lines[5]
    assert not any("guess" in line or PASSWORD in line for line in lines)
    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in caplog.records)


def test_without_an_address_callers_share_one_limit(clock):
    attempts = PasswordAttempts(clock=clock)
    for _ in range(4):
        with pytest.raises(NotAMaintainerError):
            require_maintainer(_settings(), password="guess", attempts=attempts, client=None)
    with pytest.raises(MaintainerLockedOutError):
        require_maintainer(_settings(), password="guess", attempts=attempts, client="")


@pytest.mark.parametrize("bad", [{"allowed": 0}, {"first_wait_s": 0}, {"first_wait_s": 60, "max_wait_s": 30}, {"max_clients": 0}])
def test_bad_limits_are_named(bad):
    with pytest.raises(ValueError, match="bad password limits"):
        PasswordAttempts(**bad)
