"""The networks of tests/network: built with Linux network namespaces (devstack/netns.py), removed after each test."""

from __future__ import annotations

import aioice.ice
import pytest

from devstack import netns


@pytest.fixture
def topology(monkeypatch):
    missing = netns.available()
    assert not missing, f"the network topology tests need this machine set up: {missing}"
    # Real host addresses (each thread's own namespace), not the suite's loopback-only list.
    monkeypatch.setattr(aioice.ice, "get_host_addresses", netns.ipv4_host_addresses)
    topo = netns.Topology()
    try:
        yield topo
    finally:
        topo.close()
