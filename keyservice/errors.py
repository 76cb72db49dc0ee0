"""The one exception type of the key service, carrying an AWS KMS error `__type` and HTTP status.

The HTTP layer turns it into the AWS JSON error body; in-process callers match on `.type`.
"""


class KMSError(Exception):
    """An AWS KMS protocol error: `type` is the `__type` name, `status` the HTTP status."""

    def __init__(self, type_: str, message: str, status: int = 400) -> None:
        super().__init__(f"{type_}: {message}")
        self.type = type_
        self.message = message
        self.status = status


def validation(message: str) -> KMSError:
    """A ValidationException, the error AWS returns for parameters breaking their constraints."""
    return KMSError("ValidationException", message)
