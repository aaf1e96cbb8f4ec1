"""The ``tcp`` transport: the conformance suite, plus bad input against a daemon started here."""

from __future__ import annotations

import pytest
from conformance import ProcessConformance, TransportConformance

pytestmark = pytest.mark.timeout(120)


class TestTcp(TransportConformance, ProcessConformance):
    transport = "tcp"
