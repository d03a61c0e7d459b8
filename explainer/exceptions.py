"""The errors crm-explain raises, one small tree.

    ExplainerError                 base; every error has a stable ``code``
    ├── ValidationError            the input is wrong; carries per-field ``errors``
    │   └── PayloadTooLarge        more instances / bytes than the documented limit
    ├── NotFound                   unknown model, version, explanation or review case
    ├── Conflict                   the request clashes with the current state
    ├── IntegrityError             an artifact or archive record failed its checksum
    ├── Unavailable                a dependency (archive, model) cannot serve right now
    └── AuthError                  missing or unknown credentials
        └── Forbidden              known credentials without the needed role

The HTTP layer maps each class to one problem+json status in ``explainer.api.errors``;
the CLI maps them to one sentence on stderr and a non-zero exit code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One offending field, named by its JSON path (``instances[0].features.tenure``)."""

    field: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class ExplainerError(Exception):
    code = "error"
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationError(ExplainerError):
    code = "validation_error"
    exit_code = 2

    def __init__(self, message: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.errors: list[FieldError] = list(errors or [])

    @classmethod
    def for_field(cls, field: str, message: str) -> ValidationError:
        return cls(f"{field}: {message}", [FieldError(field, message)])


class PayloadTooLarge(ValidationError):
    code = "payload_too_large"


class NotFound(ExplainerError):
    code = "not_found"
    exit_code = 3


class Conflict(ExplainerError):
    code = "conflict"
    exit_code = 4


class IntegrityError(ExplainerError):
    code = "integrity_error"
    exit_code = 5


class Unavailable(ExplainerError):
    code = "unavailable"
    exit_code = 6


class AuthError(ExplainerError):
    code = "unauthorized"
    exit_code = 7


class Forbidden(AuthError):
    code = "forbidden"
