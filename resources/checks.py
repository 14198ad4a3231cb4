"""System checks on the deployment's settings (``manage.py check``, ``check --deploy``): mistakes that
would otherwise only show later, under load or at the first pass.

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


@checks.register(deploy=True)
def hosts_file_exists(app_configs, **kwargs):
    """A named host file that is not there would leave the installation with no host at all."""
    path = settings.MQIC_HPC_CONFIG
    if not path:
        return []
    try:
        with open(path, "rb"):
            return []
    except OSError as error:
        return [
            checks.Error(
                f"MQIC_HPC_CONFIG names {path}, which cannot be read: {error.strerror}",
                hint="Write the hosts file (deploy/hosts.toml.example is an example) or unset MQIC_HPC_CONFIG.",
                id="mqic.E001",
            )
        ]
