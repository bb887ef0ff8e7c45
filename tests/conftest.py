"""Shared fixtures: real brokerd processes on free ports (see tests/brokerproc.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from brokerproc import BrokerProcess, free_port


@pytest.fixture
def start_broker(tmp_path) -> Iterator[Callable[..., BrokerProcess]]:
    """Factory: start_broker(*extra_args, node_id=1) -> a running BrokerProcess; all stopped at teardown."""
    started: list[BrokerProcess] = []

    def start(*extra_args: str, node_id: int = 1, data_dir: str | None = None) -> BrokerProcess:
        proc = BrokerProcess(data_dir or str(tmp_path / f"data-{node_id}-{len(started)}"), free_port(),
                             list(extra_args), node_id)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def broker(start_broker) -> BrokerProcess:
    """One running single-node broker."""
    return start_broker()
