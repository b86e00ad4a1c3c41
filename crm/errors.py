"""Domain errors; only web/ turns them into HTTP statuses."""


class CrmError(Exception):
    """Base of every domain error."""


class ValidationError(CrmError):
    """Input that breaks a rule; `field` names what to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotFound(CrmError):
    """The thing does not exist, or the user may not know it exists."""


class Forbidden(CrmError):
    """The user is known but the role does not allow this."""


class Conflict(CrmError):
    """The change clashes with data that already exists."""


class AuthenticationFailed(CrmError):
    """Wrong login or password."""


class TooManyAttempts(CrmError):
    """Login throttled after repeated failures."""


class Duplicate(Conflict):
    """Another record already holds this phone, e-mail or tax id; `existing_id` is that record."""

    def __init__(self, field: str, existing_id: int, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.existing_id = existing_id
