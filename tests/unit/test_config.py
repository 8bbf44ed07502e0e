"""Settings (config.py): defaults, environment and TOML, and errors that name the setting."""

from __future__ import annotations

import pytest

from voxfleet.config import load_settings
from voxfleet.exceptions import ConfigError


def test_config_defaults_and_errors(monkeypatch):
    monkeypatch.setenv("VOXFLEET_CONFIG", "/nonexistent.toml")
    settings = load_settings()
    assert settings.port == 7860 and settings.agents[0].name == "assistant"
    assert settings.cors_origins == []  # same-origin needs none; private routes never answer CORS
    assert "api_key" not in repr(settings.llm) or "not-needed" not in repr(settings.llm)
    with pytest.raises(ConfigError, match="port"):
        load_settings(port=70000)
    with pytest.raises(ConfigError, match="agent name 'Bad Name'"):
        load_settings(agents=[{"name": "Bad Name", "bot": "x.py"}])
    with pytest.raises(ConfigError, match="repeated: a"):
        load_settings(agents=[{"name": "a", "bot": "x.py"}, {"name": "a", "bot": "y.py"}])


def test_config_from_env_and_toml(monkeypatch, tmp_path):
    toml = tmp_path / "voxfleet.toml"
    toml.write_text('port = 9000\n[[agents]]\nname = "support"\nbot = "bots/support.py"\n')
    monkeypatch.setenv("VOXFLEET_CONFIG", str(toml))
    monkeypatch.setenv("VOXFLEET_LLM__BASE_URL", "http://127.0.0.1:9999/v1")
    settings = load_settings()
    assert settings.port == 9000
    assert [a.name for a in settings.agents] == ["support"]
    assert settings.llm.base_url == "http://127.0.0.1:9999/v1"
    assert load_settings(port=9100).port == 9100  # CLI flags win


def _config_error(monkeypatch, **env) -> str:
    monkeypatch.setenv("VOXFLEET_CONFIG", "/nonexistent.toml")
    for key, value in env.items():
        monkeypatch.setenv(f"VOXFLEET_{key.upper()}", value)
    with pytest.raises(ConfigError) as error:
        load_settings()
    return str(error.value)


def test_deployment_settings_errors_name_setting_and_value(monkeypatch, tmp_path):
    assert "media_ports: '40000-30000': the first port 40000 is above the last 30000" in _config_error(
        monkeypatch, media_ports="40000-30000")
    monkeypatch.delenv("VOXFLEET_MEDIA_PORTS")
    assert "ssl_keyfile: no such file '/nope/key.pem'" in _config_error(
        monkeypatch, ssl_certfile="/etc/hostname", ssl_keyfile="/nope/key.pem")
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    monkeypatch.setenv("VOXFLEET_SSL_CERTFILE", str(not_pem))
    monkeypatch.setenv("VOXFLEET_SSL_KEYFILE", str(not_pem))
    assert f"{str(not_pem)!r} with key {str(not_pem)!r} do not load" in _config_error(monkeypatch)
    for key in ("SSL_CERTFILE", "SSL_KEYFILE"):
        monkeypatch.delenv(f"VOXFLEET_{key}")
    message = _config_error(monkeypatch, ice_servers='[{"urls": ["turn:t.example.net"]}]',
                            turn_secret="very-secret-value", turn_credential_ttl_s="60")
    assert "turn_credential_ttl_s: 60 is shorter than max_session_s 3600" in message
    assert "very-secret-value" not in message


def test_deployment_settings_defaults_and_values(monkeypatch):
    monkeypatch.setenv("VOXFLEET_CONFIG", "/nonexistent.toml")
    settings = load_settings()
    assert settings.media_port_range is None and not settings.https
    assert settings.proxy_headers and settings.forwarded_allow_ips == "127.0.0.1"  # uvicorn's defaults
    monkeypatch.setenv("VOXFLEET_MEDIA_PORTS", " 40000-40099 ")
    monkeypatch.setenv("VOXFLEET_TURN_SECRET", "hush")
    settings = load_settings()
    assert settings.media_port_range == (40000, 40099)
    assert settings.turn_ttl_s == 3600 + 30 + 10 + 300
    assert "hush" not in repr(settings)


@pytest.mark.parametrize("overrides, names", [
    ({"public_url": "ftp://voice.example.com"}, "public_url"),
    ({"public_url": "https://voice.example.com/?x=1"}, "public_url"),
    ({"telephony": {"when_busy": "maybe"}}, "telephony.when_busy"),
    ({"telephony": {"hold_check_s": 0}}, "telephony.hold_check_s"),
    ({"telephony": {"stream_token_secret": "short"}}, "telephony.stream_token_secret"),
])
def test_bad_telephony_settings_name_the_field(overrides, names, monkeypatch):
    from voxfleet.config import load_settings
    from voxfleet.exceptions import ConfigError

    monkeypatch.setenv("VOXFLEET_CONFIG", "/nonexistent.toml")
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        load_settings(**overrides)


def test_twilio_credentials_come_from_twilios_own_variables(monkeypatch):
    from voxfleet.config import load_settings

    monkeypatch.setenv("VOXFLEET_CONFIG", "/nonexistent.toml")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "s3cr3t-auth")
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC1")
    monkeypatch.setenv("VOXFLEET_PUBLIC_URL", "https://voice.example.com/")
    settings = load_settings()
    assert (settings.twilio_auth_token, settings.twilio_account_sid) == ("s3cr3t-auth", "AC1")
    assert settings.public_url == "https://voice.example.com"
    assert "s3cr3t-auth" not in repr(settings)


def test_a_malformed_webhook_secret_fails_at_start_naming_the_setting():
    from pydantic import ValidationError

    from voxfleet.config import AgentSpec

    with pytest.raises(ValidationError, match="webhook_secret: 'whsec_' must be followed by base64"):
        AgentSpec(name="a", bot="x.py", webhook_secret="whsec_%%%")
    assert AgentSpec(name="a", bot="x.py", webhook_secret="plain-secret").webhook_secret == "plain-secret"


def test_recordings_live_beside_the_database_and_need_the_local_backend(tmp_path):
    from voxfleet.config import AgentSpec, Settings

    settings = Settings(database_url=f"sqlite:///{tmp_path}/v.db")
    assert settings.recordings_dir == tmp_path / "recordings" and settings.recordings.retention_days == 30
    assert not settings.agents[0].record  # off by default
    assert Settings(recordings={"dir": str(tmp_path / "r")}).recordings_dir == tmp_path / "r"
    with pytest.raises(ConfigError, match="agents rec: record = true needs backend = 'local'"):
        load_settings(backend="ray", agents=[AgentSpec(name="rec", bot="bot.py", record=True)])
