"""Pytest fixtures shared by the whole suite (real sshd, sandbox pueue, ...)."""

from __future__ import annotations

import pytest

from resources.remote import ssh
from resources.remote.download import remove_tree
from tests.support.proxy import FaultProxy
from tests.support.sshd import SshServer

# -- real sshd --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sshd():
    """One real OpenSSH server on 127.0.0.1 for the whole session (installed if missing).

    Tests that must stop or break a server start a private ``SshServer`` instead.
    """
    with SshServer() as server:
        yield server
        ssh.close_all()


@pytest.fixture
def fault_proxy(sshd):
    """A ``FaultProxy`` in front of the session sshd; reach it with ``sshd.target(port=proxy.port,
    host_key=sshd.host_key)`` (the known_hosts entry names the server's own port)."""
    proxy = FaultProxy("127.0.0.1", sshd.port)
    yield proxy
    proxy.close()


# -- the local side -----------------------------------------------------------------------


@pytest.fixture
def mqic_dirs(tmp_path, settings):
    """Settings with a fresh inbox and results folder; short timeouts for remote faults."""
    settings.MQIC_NEW_CASES_DIR = tmp_path / "new_cases"
    settings.MQIC_RESULTS_DIR = tmp_path / "results"
    settings.MQIC_NEW_CASES_DIR.mkdir()
    settings.MQIC_CLOCK_SKEW_SECONDS = 5
    return settings


@pytest.fixture
def plain_static(settings):
    """No collectstatic in tests: plain static URLs instead of the manifest's."""
    settings.STORAGES = settings.STORAGES | {
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    }


@pytest.fixture
def deep_tmp(tmp_path):
    """``tmp_path``, emptied without recursion after the test however it ended: pytest removes
    old temporary folders with ``shutil.rmtree``, which fails on a tree thousands of levels deep."""
    yield tmp_path
    for entry in tmp_path.iterdir():
        remove_tree(entry)
