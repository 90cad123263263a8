import os
import re

import pytest

from ffmpeg_api.settings import Settings, SettingsError, settings_doc

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_defaults_without_environment():
    s = Settings.from_env({})
    assert s.redis_url == "redis://localhost:6379/0"
    assert s.database_pool_size == 10
    assert s.uploads_dir.endswith("/uploads")


def test_environment_values_are_converted():
    s = Settings.from_env(
        {
            "DATABASE_POOL_SIZE": "40",
            "WEBHOOK_ALLOW_PRIVATE": "yes",
            "JOB_TIMEOUT_FACTOR": "2.5",
            "TRUSTED_PROXIES": "10.0.0.0/8, ::1",
        }
    )
    assert s.database_pool_size == 40
    assert s.webhook_allow_private is True
    assert s.job_timeout_factor == 2.5
    assert s.trusted_proxies == ("10.0.0.0/8", "::1")


@pytest.mark.parametrize(
    "env",
    [
        {"DATABASE_POOL_SIZE": "many"},
        {"WEBHOOK_ALLOW_PRIVATE": "perhaps"},
        {"TRUSTED_PROXIES": "not-a-network"},
    ],
)
def test_bad_values_name_the_variable(env):
    with pytest.raises(SettingsError) as exc:
        Settings.from_env(env)
    assert next(iter(env)) in str(exc.value)


def test_every_setting_is_documented_in_the_readme():
    with open(os.path.join(REPO, "README.md")) as fh:
        readme = fh.read()
    for env, default, _doc in settings_doc():
        row = re.search(rf"^\| `{env}` \| `([^`]*)` \|", readme, re.M)
        assert row, f"{env} missing from the README configuration table"
        assert row.group(1) == default, f"{env}: README default {row.group(1)!r} != {default!r}"
