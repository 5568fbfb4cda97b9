import pytest
from pydantic import ValidationError

from hub.settings import Settings


def test_defaults_are_the_embedded_dev_profile() -> None:
    s = Settings()
    assert s.profile == "dev" and s.kafka_bootstrap is None


def test_settings_are_frozen() -> None:
    with pytest.raises(ValidationError):
        Settings().mllp_port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "override, fragment",
    [
        ({"replication_factor": 1}, "REPLICATION_FACTOR"),
        ({"kafka_ssl_verify": False}, "SSL_VERIFY"),
        ({"kafka_bootstrap": None}, "BOOTSTRAP"),
        ({"store": "memory://"}, "STORE"),
        ({"kafka_idempotence": False}, "IDEMPOTENCE"),
    ],
)
def test_production_profile_refuses_unsafe_values(override: dict, fragment: str) -> None:
    good = dict(profile="production", kafka_bootstrap="k1:9092", replication_factor=3,
                min_insync_replicas=2, store="rocksdb://")
    Settings(**good)
    with pytest.raises(ValidationError, match=fragment):
        Settings(**{**good, **override})


def test_secrets_do_not_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_KAFKA_SASL_PASSWORD", "s3cret-token")
    s = Settings()
    assert "s3cret-token" not in repr(s) and "s3cret-token" not in str(s.model_dump())


def test_feed_timezones_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_FEED_TIMEZONES", '{"GENHOSP": "America/New_York"}')
    s = Settings()
    assert s.timezone_for("GENHOSP") == "America/New_York"
    assert s.timezone_for("OTHER") == "UTC"
