"""System checks on the deployment's settings (``manage.py check``): mistakes that only show under load.

A pass that asks a host holds its qcluster worker until the host answers or times out, and a host
lets at most ``MQIC_HOST_MAX_CONNECTIONS`` contacts in at once. With as many workers as connections,
one slow host can hold every worker, and no other host is served until it answers.
"""

from django.conf import settings
from django.core import checks


@checks.register()
def slow_host_can_hold_every_worker(app_configs, **kwargs):
    connections, workers = settings.MQIC_HOST_MAX_CONNECTIONS, settings.Q_CLUSTER["workers"]
    if connections < workers:
        return []
    return [
        checks.Warning(
            f"MQIC_HOST_MAX_CONNECTIONS ({connections}) is not below MQIC_Q_WORKERS ({workers}): "
            "one slow host can hold every worker of this qcluster, and no other host is served until it answers.",
            hint="Run more workers than connections per host (on this node, or on the nodes together).",
            id="mqic.W001",
        )
    ]
