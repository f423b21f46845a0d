"""Which shard an account lives on (R-9.1), and the account id grammar (R-1.1).

The test vectors are published for client implementers in other languages; they are computed
once with ``zlib.crc32`` and never change.
"""

from __future__ import annotations

import re
import zlib
from typing import Final

from contracts.errors import InvalidMessage

ACCOUNT_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# fullmatch, not match: Python's "$" also matches before a trailing newline.
_ACCOUNT_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

# (account_id, shard_count, expected shard). Several ids have a CRC-32 at or above 2**31, and the
# counts 10 and 1000 expose an implementation that treats the checksum as a signed integer.
SHARD_TEST_VECTORS: Final[tuple[tuple[str, int, int], ...]] = (
    ("acct-1", 1, 0),
    ("ACME.main", 1, 0),
    ("acct-1", 16, 5),
    ("acct-2", 16, 15),
    ("ACME.main", 16, 15),
    ("bot_alpha", 16, 6),
    ("trader-jane.doe_2", 16, 15),
    ("a", 16, 3),
    ("Z", 64, 39),
    ("paper-01", 64, 57),
    ("x.y_z-9", 64, 31),
    ("A1", 1024, 129),
    ("live.account_42", 1024, 781),
    ("0", 1024, 801),
    ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._", 1024, 733),
    ("acct-1", 1024, 629),
    ("9-._", 7, 6),
    ("acct-1", 10, 5),
    ("acct-1", 1000, 965),
    ("A1", 1000, 697),
)


def shard_of(account_id: str, shard_count: int) -> int:
    """The shard of ``account_id`` among ``shard_count`` shards: CRC-32 of its UTF-8 bytes mod N."""
    if shard_count < 1:
        raise ValueError(f"shard_count must be at least 1, got {shard_count}")
    return zlib.crc32(account_id.encode()) % shard_count


def validate_account_id(account_id: str) -> str:
    """Return ``account_id`` unchanged if it matches R-1.1, else raise ``invalid_field``."""
    if not isinstance(account_id, str) or _ACCOUNT_ID_RE.fullmatch(account_id) is None:
        raise InvalidMessage(
            "invalid_field", f"account_id {account_id!r:.80} does not match {ACCOUNT_ID_PATTERN}"
        )
    return account_id
