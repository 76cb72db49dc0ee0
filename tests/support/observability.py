"""Reading a server's admin listener in tests: its address (the ``admin listening on URL`` line), its
endpoints, and its metrics as numbers."""
from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.process import Server

ADMIN_LINE = re.compile(r"admin listening on (http://\S+)")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def admin_url(server: Server, timeout: float = 10.0) -> str:
    """The admin URL the server printed (right after its main ``listening on`` line)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := ADMIN_LINE.search(server.log()):
            return found.group(1)
        time.sleep(0.05)
    raise AssertionError(f"no admin listening line:\n{server.log()}")


def get(url: str) -> tuple[int, str, str]:
    """GET without any signature: status, content type, body."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read().decode()


def scrape(admin: str) -> Samples:
    """Every sample of /metrics by (name, sorted labels)."""
    status, _, text = get(f"{admin}/metrics")
    assert status == 200, text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def delta(before: Samples, after: Samples) -> Samples:
    """The samples that changed, by how much (counters and histogram counts of a workload)."""
    return {name: after[name] - before.get(name, 0.0) for name in after if after[name] != before.get(name, 0.0)}


def sample(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def wait_for_status(url: str, status: int, timeout: float = 20.0) -> str:
    """Poll ``url`` until it answers ``status`` (readiness flipping); its body."""
    deadline = time.monotonic() + timeout
    while True:
        got, _, body = get(url)
        if got == status:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} still answers {got}: {body}")
        time.sleep(0.2)


def access_lines(path: Path) -> list[dict]:
    """The JSON access-log lines written so far."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
