"""Maintainers: the admin password, or Hugging Face sign-in as a member of CLASSIFR_MAINTAINER_ORG
(checked through an injected Hub client, never the real Hub)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from classifr.app.access import NotAMaintainerError, member_of, require_maintainer
from classifr.core.config import Settings
from classifr.core.errors import ConfigError


class FakeWhoami:
    """`HfApi.whoami` for two tokens; any other token is rejected as the Hub would (401)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.users = {
            "token-of-ada": {"name": "ada", "orgs": [{"name": "classifr-team"}, {"name": "other"}]},
            "token-of-bob": {"name": "bob", "orgs": [{"name": "other"}]},
        }

    def whoami(self, token: str | None = None) -> dict:
        self.calls.append(token)
        if token not in self.users:
            raise OSError("401 Client Error: Unauthorized")
        return self.users[token]


def _settings(**changes) -> Settings:
    return replace(Settings(home=Path("/nonexistent")), **changes)


def test_nobody_is_a_maintainer_when_nothing_is_configured():
    with pytest.raises(NotAMaintainerError, match="Maintainer actions are off"):
        require_maintainer(_settings(), password="anything", oauth_token="token-of-ada", hf_api=FakeWhoami())


def test_the_password_is_checked_exactly():
    settings = _settings(admin_password="s3cret")
    assert require_maintainer(settings, password="s3cret") == "password"
    for wrong in ("", None, "S3CRET", "s3cret ", "s3cre"):
        with pytest.raises(NotAMaintainerError, match="Wrong maintainer password"):
            require_maintainer(settings, password=wrong)


def test_members_of_the_maintainer_org_are_maintainers_through_their_own_token():
    hub = FakeWhoami()
    settings = _settings(maintainer_org="classifr-team")
    assert require_maintainer(settings, password=None, oauth_token="token-of-ada", hf_api=hub) == "org:classifr-team"
    assert hub.calls == ["token-of-ada"]
    with pytest.raises(NotAMaintainerError, match="member of 'classifr-team'"):
        require_maintainer(settings, password=None, oauth_token="token-of-bob", hf_api=hub)
    with pytest.raises(NotAMaintainerError, match="member of 'classifr-team'"):
        require_maintainer(settings, password="guess", oauth_token=None, hf_api=hub)


def test_a_revoked_token_or_a_hub_outage_refuses():
    assert not member_of("classifr-team", "revoked", FakeWhoami())


def test_password_or_org_when_both_are_set():
    settings = _settings(admin_password="s3cret", maintainer_org="classifr-team")
    hub = FakeWhoami()
    assert require_maintainer(settings, password="s3cret", oauth_token="token-of-bob", hf_api=hub) == "password"
    assert require_maintainer(settings, password="", oauth_token="token-of-ada", hf_api=hub) == "org:classifr-team"
    with pytest.raises(NotAMaintainerError, match="Wrong maintainer password"):
        require_maintainer(settings, password="", oauth_token="token-of-bob", hf_api=hub)


@pytest.mark.parametrize("bad", ["team/sub", "a b", "-team", "x" * 97, "<org>"])
def test_a_bad_maintainer_org_setting_is_named(bad):
    with pytest.raises(ConfigError, match="CLASSIFR_MAINTAINER_ORG"):
        Settings.from_env({"CLASSIFR_MAINTAINER_ORG": bad, "CLASSIFR_HOME": "/tmp"})


def test_the_service_limits_wrong_passwords_per_client_and_services_do_not_share_limits(tmp_path, tiny_default_version):
    from classifr.app.access import MaintainerLockedOutError
    from classifr.app.project import open_service

    settings = Settings(home=tmp_path / "home", num_threads=1, backend="torch", admin_password="s3cret", prediction_log=False)
    service = open_service(settings, default_version=tiny_default_version)
    for _ in range(4):
        with pytest.raises(NotAMaintainerError, match="Wrong maintainer password"):
            service.require_maintainer("guess", client="203.0.113.7")
    with pytest.raises(MaintainerLockedOutError, match="try again in 30 s"):
        service.require_maintainer("guess", client="203.0.113.7")
    with pytest.raises(MaintainerLockedOutError):
        service.require_maintainer("s3cret", client="203.0.113.7")
    assert service.require_maintainer("s3cret", client="198.51.100.2") == "password"
    other = open_service(settings, default_version=tiny_default_version)  # its own limiter: no module state
    assert other.require_maintainer("s3cret", client="203.0.113.7") == "password"
    service.close()
    other.close()
