"""Process configuration of SPEC R-12.3, read from the environment and the files `make run` writes.

Nothing here connects to Redis; ``redis_url_for`` only builds the URL a process logs in with.
Secrets are ``SecretStr`` and URLs with credentials are never part of a repr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, PrivateAttr, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.redis_acl import Role

DEFAULT_REDIS_URL: Final = "redis://127.0.0.1:6379/0"
DEFAULT_RUN_DIR: Final = Path(".run")
RUN_URL_FILE: Final = "redis.url"  # written by `make run`: the URL without credentials
RUN_ACL_DIR: Final = "acl"  # written by `make run`: one `user:password` file per role

RedisUrlSource = Literal["env", "run_file", "default"]


class SettingsError(ValueError):
    """The configuration is unusable; the message names the variable or file at fault."""


class Settings(BaseSettings):
    """Every setting of R-12.3; build one at start-up in the composition root."""

    model_config = SettingsConfigDict(
        case_sensitive=True,
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        hide_input_in_errors=True,  # a validation error must not echo a password
    )

    redis_url: str | None = Field(default=None, validation_alias="REDIS_URL", repr=False)
    key_prefix: str = Field(
        default="phase", validation_alias="PHASE_KEY_PREFIX", pattern=r"^[A-Za-z0-9_.-]+$"
    )
    policy_file: Path | None = Field(default=None, validation_alias="PHASE_POLICY_FILE")
    override_password: SecretStr | None = Field(
        default=None, validation_alias="PHASE_OVERRIDE_PASSWORD"
    )
    log_format: Literal["json", "console"] = Field(
        default="json", validation_alias="PHASE_LOG_FORMAT"
    )
    redis_user: str | None = Field(default=None, validation_alias="PHASE_REDIS_USER")
    redis_password: SecretStr | None = Field(default=None, validation_alias="PHASE_REDIS_PASSWORD")
    unsafe_redis: bool = Field(default=False, validation_alias="PHASE_UNSAFE_REDIS")
    # Where `make run` leaves redis.url and acl/; relative to the working directory.
    run_dir: Path = Field(default=DEFAULT_RUN_DIR, validation_alias="PHASE_RUN_DIR")

    _url: str = PrivateAttr(default=DEFAULT_REDIS_URL)
    _url_source: RedisUrlSource = PrivateAttr(default="default")

    @model_validator(mode="after")
    def _resolve_redis_url(self) -> Settings:
        if (self.redis_user is None) != (self.redis_password is None):
            raise ValueError("set both PHASE_REDIS_USER and PHASE_REDIS_PASSWORD, or neither")
        if self.redis_url:
            self._url, self._url_source = self.redis_url, "env"
        else:
            url_file = self.run_dir / RUN_URL_FILE
            text = url_file.read_text().strip() if url_file.is_file() else ""
            if text:
                self._url, self._url_source = text, "run_file"
        scheme = urlsplit(self._url).scheme
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"Redis URL scheme must be redis, rediss or unix, not {scheme!r}")
        return self

    @property
    def resolved_redis_url(self) -> str:
        """REDIS_URL, else ``run_dir/redis.url``, else the local default; may hold credentials."""
        return self._url

    @property
    def redis_url_source(self) -> RedisUrlSource:
        return self._url_source


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def read_role_credentials(run_dir: Path, role: Role) -> tuple[str, SecretStr] | None:
    """``(user, password)`` from ``run_dir/acl/<role>`` (``user:password``), if the file exists."""
    path = run_dir / RUN_ACL_DIR / role
    if not path.is_file():
        return None
    user, sep, password = path.read_text().strip().partition(":")
    if not (sep and user and password):
        raise SettingsError(f"{path} must hold one line 'user:password'")
    return user, SecretStr(password)


def redis_url_for(settings: Settings, role: Role) -> str:
    """The URL the process acting as ``role`` connects with, credentials included.

    R-12.3: credentials come from PHASE_REDIS_USER/PHASE_REDIS_PASSWORD; else from the URL
    itself when it names a user; else from the per-role file ``run_dir/acl/<role>`` that
    `make run` writes, when there is one; else the URL is used as given.
    """
    url = settings.resolved_redis_url
    creds: tuple[str, SecretStr] | None = None
    if settings.redis_user is not None and settings.redis_password is not None:
        creds = (settings.redis_user, settings.redis_password)
    elif urlsplit(url).username is None and urlsplit(url).password is None:
        creds = read_role_credentials(settings.run_dir, role)
    if creds is None:
        return url
    user, password = creds
    parts = urlsplit(url)
    if parts.scheme == "unix":
        raise SettingsError("PHASE_REDIS_USER with a unix:// URL: put the credentials in the URL")
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{quote(user, safe='')}:{quote(password.get_secret_value(), safe='')}@{host}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))
