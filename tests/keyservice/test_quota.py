"""Token-bucket quotas: AWS defaults, burst of one second, refill, sharing and isolation."""
from keyservice.quota import DEFAULT_RATES, QuotaLimiter


class ManualTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def take(limiter: QuotaLimiter, n: int, account: str = "111122223333", cls: str = "symmetric") -> int:
    return sum(limiter.try_acquire(account, cls) for _ in range(n))


def test_defaults_are_aws_published_rates() -> None:
    assert DEFAULT_RATES["symmetric"] == 5500
    assert DEFAULT_RATES["rsa"] == 500
    assert DEFAULT_RATES["ecc"] == 300
    assert DEFAULT_RATES["CreateKey"] == 5
    assert DEFAULT_RATES["DescribeKey"] == 2000
    assert DEFAULT_RATES["ListKeys"] == 500
    assert DEFAULT_RATES["GetParametersForImport"] == 1


def test_burst_of_one_second_then_throttled() -> None:
    limiter = QuotaLimiter({"symmetric": 20}, monotonic=ManualTime())
    assert take(limiter, 25) == 20


def test_tokens_refill_at_the_configured_rate() -> None:
    clock = ManualTime()
    limiter = QuotaLimiter({"symmetric": 20}, monotonic=clock)
    take(limiter, 20)
    clock.now += 0.5
    assert take(limiter, 20) == 10
    clock.now += 10
    assert take(limiter, 30) == 20  # never more than one second of burst


def test_accounts_and_classes_have_separate_buckets() -> None:
    limiter = QuotaLimiter({"symmetric": 3, "rsa": 2}, monotonic=ManualTime())
    assert take(limiter, 5, account="A") == 3
    assert take(limiter, 5, account="B") == 3
    assert take(limiter, 5, account="A", cls="rsa") == 2


def test_hmac_shares_the_symmetric_bucket_unless_configured() -> None:
    shared = QuotaLimiter({"symmetric": 4}, monotonic=ManualTime())
    assert take(shared, 3, cls="hmac") == 3
    assert take(shared, 3, cls="symmetric") == 1
    separate = QuotaLimiter({"symmetric": 4, "hmac": 2}, monotonic=ManualTime())
    assert take(separate, 3, cls="hmac") == 2
    assert take(separate, 5, cls="symmetric") == 4


def test_management_operation_uses_its_own_rate_and_unknown_falls_back() -> None:
    limiter = QuotaLimiter(monotonic=ManualTime())
    assert take(limiter, 10, cls="CreateKey") == 5
    assert limiter.rate("SomeFutureOperation") == 100


def test_rate_below_one_still_admits_one_call() -> None:
    clock = ManualTime()
    limiter = QuotaLimiter({"CreateKey": 0.5}, monotonic=clock)
    assert take(limiter, 3, cls="CreateKey") == 1
    clock.now += 2
    assert take(limiter, 3, cls="CreateKey") == 1
