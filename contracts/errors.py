"""The one error the wire vocabulary raises: a message or event that cannot be accepted.

Its ``reason`` is a stable code that callers dead-letter with (R-9.3, R-10.6); ``detail`` is for
humans and may change.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

from pydantic import ValidationError

Reason = Literal[
    "unknown_type",
    "unknown_field",
    "malformed_json",
    "too_large",
    "invalid_field",
    "naive_timestamp",
    "non_finite_number",
    "out_of_range",
    "unsupported_schema_version",
    "missing_field",
]
REASONS: Final[tuple[Reason, ...]] = get_args(Reason)

# Error type -> reason. Our validators raise PydanticCustomError with a reason code as its type,
# which passes through; pydantic's own types map here; every other type is "invalid_field".
_REASON_OF_TYPE: Final[dict[str, Reason]] = {
    **{reason: reason for reason in REASONS},
    "extra_forbidden": "unknown_field",
    "missing": "missing_field",
    "timezone_aware": "naive_timestamp",
    "finite_number": "non_finite_number",
}
_DETAIL_ERRORS: Final = 3


class InvalidMessage(Exception):
    """Input that must be dead-lettered (or an event a subscriber must skip), never retried."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason: Reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


def invalid_from_validation_error(exc: ValidationError) -> InvalidMessage:
    """Translate pydantic's errors into one stable reason code.

    The reason is that of the first error in pydantic's order (declared field order), except that
    any complaint about ``schema_version`` wins: a message of another version is refused as such,
    not as a pile of unknown fields.
    """
    errors = exc.errors(include_url=False, include_input=False)
    chosen = errors[0]
    for error in errors:
        if error["loc"][:1] == ("schema_version",):
            chosen = error
            break
    detail = "; ".join(
        f"{'.'.join(str(part) for part in e['loc']) or exc.title}: {e['msg']}"
        for e in errors[:_DETAIL_ERRORS]
    )
    if len(errors) > _DETAIL_ERRORS:
        detail += f" (+{len(errors) - _DETAIL_ERRORS} more)"
    return InvalidMessage(_reason_of(chosen["type"], chosen["loc"]), detail)


def _reason_of(error_type: str, loc: tuple[int | str, ...]) -> Reason:
    field = loc[:1]
    if field == ("schema_version",) and error_type != "missing":
        return "unsupported_schema_version"
    if field == ("type",) and error_type == "literal_error":
        return "unknown_type"
    return _REASON_OF_TYPE.get(error_type, "invalid_field")
