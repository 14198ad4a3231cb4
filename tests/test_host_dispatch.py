"""``for_each_host`` runs every host of a pass at once, however many: none waits for a free thread
behind a slow one. Fake hosts and handlers: what is tested is the dispatch, not SSH."""

import threading

from resources.contact import for_each_host
from resources.models import HpcHost

HOSTS = 40  # well past any pool a pass could reasonably cap itself at


def test_every_host_runs_at_once_and_a_slow_one_holds_up_none():
    hosts = {HpcHost(pk=n, name=f"h{n}"): n for n in range(HOSTS)}
    all_running = threading.Barrier(HOSTS, timeout=10)  # passes only if every host runs at the same time
    finished, lock, others_done = [], threading.Lock(), threading.Event()
    slow_saw_the_others_finish = []

    def handle(host: HpcHost, n: int) -> None:
        all_running.wait()
        if n == 0:  # the slow host: hangs until every other host is done
            slow_saw_the_others_finish.append(others_done.wait(10))
            return
        with lock:
            finished.append(host.name)
            if len(finished) == HOSTS - 1:
                others_done.set()

    for_each_host(hosts, handle)
    assert len(finished) == HOSTS - 1
    assert slow_saw_the_others_finish == [True], "the others finished while the slow host still hung"
