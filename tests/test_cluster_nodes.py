"""A qcluster node with a cluster name of its own (``Q_CLUSTER_NAME``), as a site with several
nodes runs them: the settings must load, and the node must take its tasks from its own queue
while sharing the site's name (the key django-q2 signs task payloads with)."""

import subprocess
import sys

from tests.support.processes import REPO, django_env

SHOW = "import django; django.setup(); from django_q.conf import Conf; print(Conf.CLUSTER_NAME, Conf.PREFIX)"


def test_a_named_node_loads_and_has_its_own_queue():
    env = django_env(Q_CLUSTER_NAME="node-b", MQIC_Q_BROKER="redis")
    shown = subprocess.run(
        [sys.executable, "-c", SHOW], cwd=REPO, env=env, capture_output=True, text=True, check=False, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split() == ["node-b", "mqic"]
