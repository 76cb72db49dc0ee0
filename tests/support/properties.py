"""Shared hypothesis settings and strategies for the property tests.

Every property test runs a bounded number of examples with no per-example deadline (the 2 shared
CI cores make timings noisy), so the whole set stays within a few seconds of suite time. For a
deeper local search set PROPERTY_EXAMPLES (e.g. PROPERTY_EXAMPLES=20000 pytest tests/gateway -k propert).
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

BOUNDED = settings(max_examples=int(os.environ.get("PROPERTY_EXAMPLES", "150")), deadline=None, suppress_health_check=[HealthCheck.too_slow],
                   database=None)
PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)

# What aiohttp hands the gateway for a header value or path: the wire bytes decoded as UTF-8 with
# surrogateescape, so non-UTF-8 bytes arrive as lone surrogates U+DC80..U+DCFF.
wire_text = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=40).map(lambda raw: raw.decode("utf-8", "surrogateescape")),
)
# Decimal-looking text: ASCII digits, other scripts' digits, superscripts and very long numbers.
digit_text = st.one_of(
    st.text(alphabet="0123456789", max_size=25),
    st.text(alphabet="0123456789٠١٢³²¹٣੩𝟙", min_size=1, max_size=6),
    st.integers(4290, 4400).map(lambda n: "9" * n),
)
