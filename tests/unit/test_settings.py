"""Process configuration (R-12.3): where the Redis URL comes from, which user a process logs in
as, the other variables, and that secrets never show in a repr or an error.

Every test starts from an environment without any of the variables, in an empty working
directory, so `.run/` is whatever the test writes there.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from worker.redis_acl import USER_FOR_ROLE, Role
from worker.settings import DEFAULT_REDIS_URL, Settings, redis_url_for

ROOT = Path(__file__).resolve().parents[2]
VARIABLES = ("REDIS_URL", "PHASE_KEY_PREFIX", "PHASE_POLICY_FILE", "PHASE_OVERRIDE_PASSWORD",
             "PHASE_LOG_FORMAT", "PHASE_REDIS_USER", "PHASE_REDIS_PASSWORD",
             "PHASE_UNSAFE_REDIS", "PHASE_RUN_DIR")
OVERRIDE_PASSWORD = "correct-horse-battery-staple-42"
REDIS_PASSWORD = "s3cret-redis-password-of-the-worker"
ROLES: tuple[Role, ...] = ("worker", "bot", "ops", "reader")


@pytest.fixture
def run_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A clean environment in an empty working directory; returns its `.run` (not created)."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path / ".run"


def write_run_files(run_dir: Path, url: str) -> None:
    """What `make run` leaves behind: the URL without credentials and one file per role."""
    (run_dir / "acl").mkdir(parents=True)
    (run_dir / "redis.url").write_text(url + "\n")
    for role, user in USER_FOR_ROLE.items():
        (run_dir / "acl" / role).write_text(f"{user}:pw-of-{role}\n")


# -- REDIS_URL, then .run/redis.url, then the default ------------------------------------------


def test_r12_3_redis_url_wins_over_the_file_make_run_wrote(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_run_files(run_dir, "redis://127.0.0.1:7001/0")
    monkeypatch.setenv("REDIS_URL", "redis://10.0.0.5:6380/2")

    cfg = Settings()

    assert (cfg.resolved_redis_url, cfg.redis_url_source) == ("redis://10.0.0.5:6380/2", "env")


def test_r12_3_without_redis_url_the_url_in_run_redis_url_is_used(run_dir: Path) -> None:
    write_run_files(run_dir, "redis://127.0.0.1:7001/0")

    cfg = Settings()

    assert (cfg.resolved_redis_url, cfg.redis_url_source) == ("redis://127.0.0.1:7001/0",
                                                              "run_file")


def test_r12_3_without_either_the_local_default_is_used(run_dir: Path) -> None:
    cfg = Settings()

    assert DEFAULT_REDIS_URL == "redis://127.0.0.1:6379/0"
    assert (cfg.resolved_redis_url, cfg.redis_url_source) == (DEFAULT_REDIS_URL, "default")


def test_r12_3_an_empty_run_redis_url_falls_back_to_the_default(run_dir: Path) -> None:
    run_dir.mkdir()
    (run_dir / "redis.url").write_text("\n")

    assert Settings().redis_url_source == "default"


# -- the user each process logs in as (R-7.14) -----------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_r12_3_phase_redis_user_and_password_choose_the_login(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch, role: Role) -> None:
    write_run_files(run_dir, "redis://127.0.0.1:7001/0")  # ignored: the variables win
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:7002/0")
    monkeypatch.setenv("PHASE_REDIS_USER", "phaseguard-worker")
    monkeypatch.setenv("PHASE_REDIS_PASSWORD", REDIS_PASSWORD)

    url = redis_url_for(Settings(), role)

    assert url == f"redis://phaseguard-worker:{REDIS_PASSWORD}@127.0.0.1:7002/0"


@pytest.mark.parametrize("role", ROLES)
def test_r12_3_without_them_each_role_logs_in_with_its_file_under_run_acl(
        run_dir: Path, role: Role) -> None:
    write_run_files(run_dir, "redis://127.0.0.1:7001/0")

    url = redis_url_for(Settings(), role)

    assert url == f"redis://{USER_FOR_ROLE[role]}:pw-of-{role}@127.0.0.1:7001/0"


def test_r12_3_a_redis_url_from_the_environment_is_used_as_given(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_run_files(run_dir, "redis://127.0.0.1:7001/0")  # belongs to another server
    given = "redis://phaseguard-ops:pw@10.0.0.5:6380/0"
    monkeypatch.setenv("REDIS_URL", given)

    assert redis_url_for(Settings(), "bot") == given


@pytest.mark.parametrize("role", ROLES)
def test_r12_3_a_redis_url_without_a_user_takes_the_role_file_under_run_acl(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch, role: Role) -> None:
    write_run_files(run_dir, "redis://127.0.0.1:7001/0")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:7001/0")

    url = redis_url_for(Settings(), role)

    assert url == f"redis://{USER_FOR_ROLE[role]}:pw-of-{role}@127.0.0.1:7001/0"


def test_r12_3_a_redis_url_without_a_user_and_no_role_file_is_used_as_given(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:7001/0")

    assert redis_url_for(Settings(), "worker") == "redis://127.0.0.1:7001/0"


@pytest.mark.parametrize("only", ["PHASE_REDIS_USER", "PHASE_REDIS_PASSWORD"])
def test_r12_3_a_redis_user_without_its_password_or_the_reverse_is_refused(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch, only: str) -> None:
    monkeypatch.setenv(only, "phaseguard-worker" if only == "PHASE_REDIS_USER" else REDIS_PASSWORD)

    with pytest.raises(ValidationError) as caught:
        Settings()

    assert REDIS_PASSWORD not in str(caught.value)


# -- the other variables ------------------------------------------------------------------------


def test_r12_3_every_variable_has_its_default(run_dir: Path) -> None:
    cfg = Settings()

    assert (cfg.key_prefix, cfg.policy_file, cfg.override_password, cfg.log_format,
            cfg.redis_user, cfg.redis_password, cfg.unsafe_redis) == (
        "phase", None, None, "json", None, None, False)


def test_r12_3_every_variable_is_read_from_the_environment(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    for name, value in {"PHASE_KEY_PREFIX": "desk-2.eu_1", "PHASE_POLICY_FILE": str(policy),
                        "PHASE_OVERRIDE_PASSWORD": OVERRIDE_PASSWORD,
                        "PHASE_LOG_FORMAT": "console", "PHASE_REDIS_USER": "phaseguard-ops",
                        "PHASE_REDIS_PASSWORD": REDIS_PASSWORD}.items():
        monkeypatch.setenv(name, value)

    cfg = Settings()

    assert (cfg.key_prefix, cfg.policy_file, cfg.log_format, cfg.redis_user) == (
        "desk-2.eu_1", policy, "console", "phaseguard-ops")
    assert isinstance(cfg.override_password, SecretStr)
    assert cfg.override_password.get_secret_value() == OVERRIDE_PASSWORD
    assert isinstance(cfg.redis_password, SecretStr)
    assert cfg.redis_password.get_secret_value() == REDIS_PASSWORD


@pytest.mark.parametrize("prefix", ["phase:x", "{phase}", "ph ase", "", "ph*"])
def test_r12_3_a_key_prefix_outside_its_pattern_is_refused(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch, prefix: str) -> None:
    monkeypatch.setenv("PHASE_KEY_PREFIX", prefix)

    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize("fmt", ["text", "JSON", "xml"])
def test_r12_3_a_log_format_other_than_json_or_console_is_refused(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    monkeypatch.setenv("PHASE_LOG_FORMAT", fmt)

    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize(("value", "unsafe"), [("1", True), ("0", False)])
def test_r12_2_phase_unsafe_redis_allows_an_unsafe_server_only_when_set_to_1(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch, value: str, unsafe: bool) -> None:
    monkeypatch.setenv("PHASE_UNSAFE_REDIS", value)

    assert Settings().unsafe_redis is unsafe


# -- secrets -------------------------------------------------------------------------------------


def test_r12_3_no_secret_shows_in_the_settings_repr(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", f"redis://phaseguard-worker:{REDIS_PASSWORD}x@host:1/0")
    monkeypatch.setenv("PHASE_OVERRIDE_PASSWORD", OVERRIDE_PASSWORD)
    monkeypatch.setenv("PHASE_REDIS_USER", "phaseguard-worker")
    monkeypatch.setenv("PHASE_REDIS_PASSWORD", REDIS_PASSWORD)

    cfg = Settings()

    for text in (repr(cfg), str(cfg)):
        assert OVERRIDE_PASSWORD not in text
        assert REDIS_PASSWORD not in text


def test_r12_3_a_configuration_error_does_not_echo_a_password(
        run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHASE_OVERRIDE_PASSWORD", OVERRIDE_PASSWORD)
    monkeypatch.setenv("PHASE_REDIS_USER", "phaseguard-worker")
    monkeypatch.setenv("PHASE_REDIS_PASSWORD", REDIS_PASSWORD)
    monkeypatch.setenv("PHASE_LOG_FORMAT", OVERRIDE_PASSWORD)  # a password pasted in the wrong
    monkeypatch.setenv("PHASE_KEY_PREFIX", REDIS_PASSWORD + ":")  # places, both refused

    with pytest.raises(ValidationError) as caught:
        Settings()

    assert {e["loc"] for e in caught.value.errors()} == {("PHASE_LOG_FORMAT",),
                                                         ("PHASE_KEY_PREFIX",)}
    assert OVERRIDE_PASSWORD not in str(caught.value)
    assert REDIS_PASSWORD not in str(caught.value)


# -- documentation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [v for v in VARIABLES if v != "PHASE_RUN_DIR"])
def test_r12_3_the_readme_documents_every_variable(name: str) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")

    assert f"`{name}`" in readme
