"""Domain errors. Each carries an HTTP status and a message that is safe to show a client."""

from __future__ import annotations


class RaicesError(Exception):
    """Base error: `message` is client-safe; details go to the log, never to the client."""

    status_code = 500
    code = "InternalError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(RaicesError):
    """A requested resource does not exist."""

    status_code = 404
    code = "NotFound"


class InvalidParameter(RaicesError):
    """A request parameter is malformed or out of range."""

    status_code = 400
    code = "InvalidParameter"


class DatabaseUnavailable(RaicesError):
    """The database cannot be reached."""

    status_code = 503
    code = "ServiceUnavailable"


class SourceError(RaicesError):
    """A data source cannot be resolved: unknown id, missing file, unreachable URL."""

    status_code = 400
    code = "SourceError"


class ChecksumMismatch(SourceError):
    """A source file's sha256 differs from the manifest."""

    code = "ChecksumMismatch"


class DataError(RaicesError):
    """Input data is unreadable or fails validation; nothing was stored."""

    status_code = 422
    code = "DataError"

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class ClusterError(RaicesError):
    """The local PostGIS cluster cannot be set up or started."""

    code = "ClusterError"


class InvalidProfile(RaicesError):
    """A scoring profile names indicators or sets that do not exist."""

    status_code = 422
    code = "InvalidProfile"
