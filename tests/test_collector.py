"""``collector.paused()``: the cyclic garbage collector stops for a stretch of work and runs again
after it, however the work ended, however pauses overlap, and only if it ran before."""

import gc
import threading

import pytest

from resources.remote import collector


@pytest.fixture(autouse=True)
def collector_running():
    assert gc.isenabled()
    yield
    gc.enable()


def test_the_collector_stops_for_the_stretch_and_runs_again_after_it():
    with collector.paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_it_runs_again_after_an_error():
    with pytest.raises(ValueError), collector.paused():
        raise ValueError("bad output")
    assert gc.isenabled()


def test_overlapping_pauses_end_with_the_last():
    with collector.paused():
        with collector.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_pauses_on_threads_end_with_the_last():
    inside, leave = threading.Barrier(3), threading.Event()

    def pause():
        with collector.paused():
            inside.wait()
            leave.wait()

    threads = [threading.Thread(target=pause) for _ in range(2)]
    for thread in threads:
        thread.start()
    inside.wait()
    assert not gc.isenabled()
    leave.set()
    for thread in threads:
        thread.join()
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off():
    gc.disable()
    with collector.paused():
        pass
    assert not gc.isenabled()
