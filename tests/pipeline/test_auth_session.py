import pytest

from pipeline.auth_session import AuthError, RemoteSettings, dex_session_cookies, session_cookie_header
from tests.pipeline.fake_kubeflow import COOKIE, FakeKubeflow, serve

USERS = {"user@example.com": "s3cret-pass"}


def _settings(url: str, password: str = "s3cret-pass") -> RemoteSettings:
    return RemoteSettings(endpoint=url, namespace="team", username="user@example.com", password=password)


@pytest.mark.parametrize("approval", [False, True])
def test_static_password_login_through_oauth2_proxy_gives_the_session_cookie(approval: bool) -> None:
    fake = FakeKubeflow(USERS, approval=approval)
    with serve(fake) as url:
        cookies = dex_session_cookies(_settings(url))
    assert cookies == {COOKIE: fake.session}
    posts = [r for r in fake.requests if r["method"] == "POST"]
    assert posts[0]["path"].startswith("/dex/auth/local/login")
    assert "login=user%40example.com" in posts[0]["body"]
    assert ("/dex/approval" in posts[-1]["path"]) is approval


def test_wrong_password_is_a_clear_error_without_the_password() -> None:
    with serve(FakeKubeflow(USERS)) as url, pytest.raises(AuthError) as error:
        dex_session_cookies(_settings(url, password="wrong-guess"))
    assert "did not accept the login of 'user@example.com'" in str(error.value)
    assert "wrong-guess" not in str(error.value)


def test_an_unprotected_endpoint_needs_no_cookie() -> None:
    fake = FakeKubeflow(USERS)
    fake.authenticated = lambda headers: True
    with serve(fake) as url:
        assert dex_session_cookies(_settings(url)) == {}


def test_unreachable_endpoint() -> None:
    with pytest.raises(AuthError, match="cannot reach"):
        dex_session_cookies(_settings("http://127.0.0.1:9"))


def test_a_given_cookie_skips_the_login() -> None:
    settings = RemoteSettings(endpoint="http://127.0.0.1:9", namespace="team", session_cookie=f"{COOKIE}=abc")
    assert session_cookie_header(settings) == f"{COOKIE}=abc"


def test_settings_come_from_the_environment_with_tls_verified_by_default() -> None:
    env = {"KFP_ENDPOINT": "https://kf.example.org/", "KFP_NAMESPACE": "team", "KFP_USERNAME": "u"}
    settings = RemoteSettings.from_env({**env, "KFP_PASSWORD": "s3cret-pass"})
    assert settings.endpoint == "https://kf.example.org" and settings.verify_tls is True
    assert "s3cret" not in repr(settings), "the password never reaches a log through repr"
    assert RemoteSettings.from_env({**env, "KFP_PASSWORD": "x", "KFP_SKIP_TLS_VERIFY": "true"}).verify_tls is False
    with pytest.raises(ValueError, match="KFP_USERNAME, KFP_PASSWORD"):
        RemoteSettings.from_env({"KFP_ENDPOINT": "https://kf", "KFP_NAMESPACE": "team"})
