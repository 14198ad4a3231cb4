"""Two hosts on one login node (same address, port and user; each its own pueue and folder),
or two threads of one process talking to the same host: each contact has a connection of its
own, so the end of one never closes the connection another is using."""

import threading

import pytest
from django.db import connections

from resources.contact import contact
from tests.support.hpc import make_hpc_host
from tests.support.system import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_one_contact_ending_leaves_the_other_hosts_connection_open(sshd, sandbox, tmp_path):
    first = make_hpc_host(sshd, sandbox, name="first", groups=("gpu_a",))
    second = make_hpc_host(sshd, sandbox, name="second", groups=("gpu_b",))
    running = tmp_path / "running"

    def contact_second_meanwhile():
        try:
            wait_for(running.exists, timeout=30, message="the first host's command to run", interval=0.02)
            with contact(second) as link:
                link.queue.state()
            assert not link.failed, link.error
        finally:
            connections.close_all()

    with contact(first) as link:
        link.queue.state()
        meanwhile = threading.Thread(target=contact_second_meanwhile)
        meanwhile.start()
        result = link.queue.transport.run(f"touch {running}; sleep 2; echo still here")
        meanwhile.join()
    assert not link.failed, link.error
    assert result.stdout == "still here\n"
