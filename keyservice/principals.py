"""Which account a principal ARN belongs to (credentials, grants and the cross-account rules use it)."""

import re

# IAM principals (`arn:aws:iam::ACCOUNT:root|user/..|role/..`) and STS sessions
# (`arn:aws:sts::ACCOUNT:assumed-role/..`), in any AWS partition.
_PRINCIPAL_RE = re.compile(r"arn:aws[a-z-]*:(?:iam|sts)::(\d{12}):\S+")


def principal_account(principal: str) -> str | None:
    """The account a principal ARN belongs to, or None when it is not an IAM/STS principal ARN."""
    match = _PRINCIPAL_RE.fullmatch(principal)
    return match.group(1) if match else None
