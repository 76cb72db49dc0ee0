"""Key policy parsing (done once per policy) and evaluation (done on every call that touches a key).

There is no IAM here: a statement naming the account root (`arn:aws:iam::ACCOUNT:root` or the bare
account id) matches every principal of that account, `"*"` matches anyone, any other ARN matches
exactly. Explicit Deny wins over Allow; no matching Allow means not allowed.
"""

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import KMSError

MAX_POLICY_BYTES = 32768
Condition = Callable[[dict[str, Any]], bool]


def default_policy(account_id: str) -> str:
    """The policy AWS gives a key created without one: the account root may do everything."""
    return json.dumps({
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": [{
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
            "Action": "kms:*",
            "Resource": "*",
        }],
    }, indent=2)


@dataclass
class Request:
    """Who asks to do what, with which condition keys (kms:EncryptionContext:*, kms:CallerAccount...)."""

    principal_arn: str
    account_id: str
    action: str
    conditions: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Statement:
    allow: bool
    principal: Callable[[Request], bool]
    action: re.Pattern[str]
    not_action: bool
    conditions: list[Condition]

    def matches(self, req: Request) -> bool:
        action_hit = bool(self.action.match(req.action.lower()))
        if action_hit == self.not_action:
            return False
        return self.principal(req) and all(cond(req.conditions) for cond in self.conditions)


class CompiledPolicy:
    """A parsed key policy, ready to be evaluated many times."""

    def __init__(self, statements: list[_Statement]) -> None:
        self._statements = statements

    def decide(self, req: Request) -> bool | None:
        """True: allowed; False: explicitly denied; None: nothing allows it."""
        allowed = None
        for st in self._statements:
            if st.matches(req):
                if not st.allow:
                    return False
                allowed = True
        return allowed


def compile_policy(text: str) -> CompiledPolicy:
    """Parse a policy document; anything malformed is MalformedPolicyDocumentException."""
    if not isinstance(text, str) or not text.strip() or len(text.encode()) > MAX_POLICY_BYTES:
        raise _malformed("The policy must be a non-empty JSON document of at most 32 KB.")
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise _malformed(f"The policy is not valid JSON: {exc}") from exc
    except RecursionError:  # json.loads recurses once per nesting level
        raise _malformed("The policy nests too deeply.") from None
    statements = doc.get("Statement") if isinstance(doc, dict) else None
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list) or not statements:
        raise _malformed("The policy must contain a Statement list.")
    return CompiledPolicy([_compile_statement(st) for st in statements])


def _compile_statement(st: Any) -> _Statement:
    if not isinstance(st, dict) or st.get("Effect") not in ("Allow", "Deny"):
        raise _malformed("Each statement needs an Effect of Allow or Deny.")
    if ("Action" in st) == ("NotAction" in st):
        raise _malformed("Each statement needs exactly one of Action and NotAction.")
    if "Principal" not in st:
        raise _malformed("Each key policy statement needs a Principal.")
    actions = _string_list(st.get("Action", st.get("NotAction")), "Action")
    return _Statement(
        allow=st["Effect"] == "Allow",
        principal=_compile_principal(st["Principal"]),
        action=_wildcards(actions),
        not_action="NotAction" in st,
        conditions=_compile_conditions(st.get("Condition", {})),
    )


def _string_list(value: Any, what: str) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise _malformed(f"{what} must be a string or a list of strings.")
    return values


def _glob_regex(patterns: list[str]) -> re.Pattern[str]:
    """One anchored regex for IAM wildcard patterns: `*` is any run, `?` one character, and every
    other character is literal (IAM has no `[...]` classes, unlike fnmatch)."""
    globs = (re.escape(p).replace(r"\*", ".*").replace(r"\?", ".") for p in patterns)
    return re.compile("(?s:" + "|".join(globs) + r")\Z")


def _wildcards(patterns: list[str]) -> re.Pattern[str]:
    """Action patterns, matched against lower-cased action names."""
    return _glob_regex([p.lower() for p in patterns])


def _compile_principal(principal: Any) -> Callable[[Request], bool]:
    if principal == "*":
        return lambda req: True
    if not isinstance(principal, dict) or not principal:
        raise _malformed("Principal must be \"*\" or a map such as {\"AWS\": [...]}.")
    arns: list[str] = []
    for kind, value in principal.items():
        if kind != "AWS":
            continue  # service principals never call this key service
        arns.extend(_string_list(value, "Principal"))
    anyone = "*" in arns
    accounts = {a for a in arns if re.fullmatch(r"\d{12}", a)}
    accounts |= {m.group(1) for a in arns if (m := re.fullmatch(r"arn:aws:iam::(\d{12}):root", a))}
    exact = set(arns)
    return lambda req: anyone or req.account_id in accounts or req.principal_arn in exact


def _compile_conditions(block: Any) -> list[Condition]:
    if not isinstance(block, dict):
        raise _malformed("Condition must be a map.")
    conditions: list[Condition] = []
    for operator, tests in block.items():
        if not isinstance(tests, dict):
            raise _malformed(f"Condition {operator} must map keys to values.")
        for key, expected in tests.items():
            conditions.append(_compile_condition(operator, key, _string_list(expected, key)))
    return conditions


_MATCHERS: dict[str, Callable[[list[str]], Callable[[str], bool]]] = {
    "StringEquals": lambda exp: lambda v: v in exp,
    "StringNotEquals": lambda exp: lambda v: v not in exp,
    "StringEqualsIgnoreCase": lambda exp: lambda v: v.lower() in {e.lower() for e in exp},
    "StringLike": lambda exp: (lambda rx: lambda v: bool(rx.match(v)))(_glob_regex(exp)),
    "StringNotLike": lambda exp: (lambda rx: lambda v: not rx.match(v))(_glob_regex(exp)),
}
# Negated operators are true when the key is absent: an absent value "does not equal" anything.
_NEGATED = frozenset({"StringNotEquals", "StringNotLike"})


def _compile_condition(operator: str, key: str, expected: list[str]) -> Condition:
    """One condition test; multi-valued keys need ForAnyValue:/ForAllValues: as in IAM."""
    qualifier, _, base = operator.rpartition(":")
    if_exists = base.endswith("IfExists")
    base = base.removesuffix("IfExists")
    if base not in _MATCHERS or qualifier not in ("", "ForAnyValue", "ForAllValues"):
        raise _malformed(f"Unsupported condition operator {operator}.")
    test = _MATCHERS[base](expected)
    lowered_key = key.lower()

    def check(conditions: dict[str, Any]) -> bool:
        value = conditions.get(lowered_key)
        if value is None:
            return if_exists or qualifier == "ForAllValues" or (not qualifier and base in _NEGATED)
        values = value if isinstance(value, list) else [value]
        if qualifier == "ForAllValues":
            return all(test(v) for v in values)
        return any(test(v) for v in values)

    return check


def _malformed(message: str) -> KMSError:
    return KMSError("MalformedPolicyDocumentException", message)
