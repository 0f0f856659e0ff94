"""caffe.Timer follows Caffe's Timer: start/stop pairs, ms stops a running timer."""

import logging

import pytest

from caffelite import timer as timer_module
from caffelite.timer import Timer


@pytest.fixture
def clock(monkeypatch):
    """A fake perf_counter the test advances by hand (seconds)."""
    now = [100.0]
    monkeypatch.setattr(timer_module.time, "perf_counter", lambda: now[0])
    return now


def test_ms_is_the_last_start_stop_interval(clock):
    t = Timer()
    t.start()
    clock[0] += 0.25
    t.start()  # ignored while running, as in Caffe
    clock[0] += 0.5
    t.stop()
    clock[0] += 9.0  # after stop() the reading no longer moves
    assert t.ms == pytest.approx(750.0)
    assert t.seconds == pytest.approx(0.75)
    t.start()
    clock[0] += 0.002
    assert t.running
    assert t.ms == pytest.approx(2.0)  # reading a running timer stops it
    assert not t.running


def test_reading_a_timer_never_started_warns_and_is_zero(caplog):
    with caplog.at_level(logging.WARNING, logger="caffelite"):
        assert Timer().ms == 0.0
    assert "Timer has never been run before reading time." in caplog.text
