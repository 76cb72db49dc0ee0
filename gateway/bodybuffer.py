"""A bound on the memory held by request bodies kept whole before they are stored.

A PutObject body whose checksum arrives in an aws-chunked trailer (what SDKs send when they stream over https)
can only be stored with that checksum if the upstream PUT waits for the trailer: its metadata goes out before
its body. Small bodies are held in memory until then, within one budget per process; when the budget is spent
a body streams as any other and its checksum is verified but not kept. Never waiting for memory keeps a burst
of uploads from queueing behind each other.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

# The largest body held: the aws CLI's and boto3's multipart threshold, so every single PUT they make qualifies
# (larger objects go multipart, whose checksums are kept in the manifest).
MAX_HELD_BODY = 8 * 1024 * 1024


class BodyBuffer:
    """A byte budget taken without waiting: ``hold(n)`` yields whether ``n`` bytes may be held now (never for
    an empty body: there is nothing to hold)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.held = 0

    @contextmanager
    def hold(self, size: int) -> Iterator[bool]:
        granted = 0 < size <= MAX_HELD_BODY and self.held + size <= self.budget
        if granted:
            self.held += size
        try:
            yield granted
        finally:
            if granted:
                self.held -= size
