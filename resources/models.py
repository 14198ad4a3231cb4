"""The remote world as the database sees it: HPC hosts and the GPU groups on them.

A GPU group is a pueue group on a host. MQIC runs at most one case in a group at a time,
and the ``status`` column is the lock: it only ever changes through the compare-and-swap
functions in ``resources.services``. ``resources`` knows nothing about cases, so the
holder of a group is stored as an opaque owner id (the case's primary key).
"""

from django.core.exceptions import ValidationError
from django.db import models

from .validators import (
    validate_allowed_names,
    validate_proxy_jump,
    validate_pueue_command,
    validate_pueue_group,
    validate_remote_base_dir,
)


class HpcHost(models.Model):
    class Transport(models.TextChoices):
        SSH = "ssh", "SSH"
        LOCAL = "local", "this machine (the demo's local HPC)"

    name = models.SlugField(max_length=64, unique=True)
    transport = models.CharField(
        max_length=8,
        choices=Transport.choices,
        default=Transport.SSH,
        help_text="How MQIC reaches the host. Set by the deployment (configure_hpc), never in the admin.",
    )
    hostname = models.CharField(
        max_length=255, blank=True, help_text="SSH host name of the login node (none for a local host)."
    )
    port = models.PositiveIntegerField(default=22)
    username = models.CharField(max_length=64, blank=True)
    key_path = models.CharField("private key path", max_length=1024, blank=True)
    known_hosts_path = models.CharField(max_length=1024, blank=True)
    proxy_jump = models.CharField(
        "jump hosts",
        max_length=1024,
        blank=True,
        validators=[validate_proxy_jump],
        help_text="OpenSSH ProxyJump: [user@]host[:port], comma-separated for a chain; their keys are "
        "verified against the known_hosts file.",
    )
    host_key = models.TextField(
        "trusted host key",
        blank=True,
        help_text='"key-type base64" of the key this host must present; empty: use the known_hosts file.',
    )
    base_dir = models.CharField("remote base directory", max_length=1024, validators=[validate_remote_base_dir])
    pueue_command = models.CharField(
        "remote pueue command",
        max_length=1024,
        default="pueue",
        validators=[validate_pueue_command],
        help_text="pueue itself (name or path), optionally with -c CONFIG or -p PROFILE.",
    )
    enabled = models.BooleanField(default=True)
    allowed_groups = models.JSONField(
        "who may use it",
        default=list,
        blank=True,
        validators=[validate_allowed_names],
        help_text="The Django user names and group names whose cases may run here (the operators' cases "
        "always may); empty: everyone. Set by the deployment (configure_hpc): one HPC account is one trust "
        "domain, so tenants who must not see each other's data get hosts of their own.",
    )

    # The host's health, written only by ``resources.contact`` (the one seam for host contact).
    last_contact_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    down_since = models.DateTimeField(
        null=True, blank=True, help_text="Start of the current run of failed contacts; empty while it answers."
    )
    next_try_at = models.DateTimeField(
        null=True, blank=True, help_text="While backing off after repeated failures: no pass contacts it before."
    )
    pueue_version = models.CharField(max_length=32, blank=True)

    class Meta:
        verbose_name = "HPC host"
        ordering = ["name"]
        permissions = [
            ("view_remote_state", "Can see a host's live pueue state and task logs"),
            ("trust_host_key", "Can trust a host's SSH key"),
        ]

    def __str__(self):
        return self.name

    def clean(self):
        if self.transport == self.Transport.SSH and not self.hostname:
            raise ValidationError({"hostname": "An SSH host needs its host name."})

    @property
    def address(self) -> str:
        """Where it is reached, as an operator reads it: ``user@host:port``, or this machine."""
        if self.is_local:
            return "this machine (local)"
        return f"{self.username + '@' if self.username else ''}{self.hostname}:{self.port}"

    @property
    def is_local(self) -> bool:
        return self.transport == self.Transport.LOCAL


class GpuGroup(models.Model):
    class Status(models.TextChoices):
        AVAILABLE = "available"
        ASSIGNED = "assigned"
        DISABLED = "disabled"

    name = models.SlugField(max_length=64, unique=True)
    host = models.ForeignKey(HpcHost, on_delete=models.PROTECT, related_name="gpu_groups")
    pueue_group = models.CharField(max_length=64, validators=[validate_pueue_group])
    devices = models.CharField(
        max_length=64, blank=True, help_text="CUDA_VISIBLE_DEVICES for jobs in this group, e.g. 0,1."
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.AVAILABLE)
    holder_id = models.PositiveBigIntegerField(
        null=True, blank=True, unique=True, help_text="Primary key of the case holding this group."
    )
    lease_generation = models.PositiveIntegerField(default=0)
    assigned_at = models.DateTimeField(null=True, blank=True)
    blocked_reason = models.TextField(
        blank=True,
        help_text="Why MQIC will not assign this group now (e.g. remote work it did not start). Empty: usable.",
    )
    retired = models.BooleanField(
        default=False,
        help_text="Dropped from the deployment's host configuration (configure_hpc): never handed out again, "
        "disabled as soon as it is free. Listing it again puts it back in service.",
    )

    class Meta:
        verbose_name = "GPU group"
        ordering = ["name"]
        permissions = [
            ("enable_gpugroup", "Can enable or disable GPU groups"),
            ("release_gpugroup", "Can release a GPU group held by a case"),
            ("sync_gpugroups", "Can create GPU groups from a host's pueue groups"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["host", "pueue_group"], name="unique_pueue_group_per_host"),
            models.CheckConstraint(
                condition=(
                    models.Q(status="assigned", holder_id__isnull=False)
                    | (~models.Q(status="assigned") & models.Q(holder_id__isnull=True))
                ),
                name="assigned_iff_held",
            ),
        ]

    def __str__(self):
        return self.name

    @property
    def device_count(self) -> int:
        """How many GPUs a job of this group holds: the devices listed, 1 where none are given.
        GPU time (accounting, fair share) is run time times this."""
        return count_devices(self.devices)


def count_devices(devices: str | None) -> int:
    """The rule behind ``GpuGroup.device_count``, for a devices list read as a value (``None``: none)."""
    return max(1, len([d for d in (devices or "").split(",") if d.strip()]))


class HostSlot(models.Model):
    """One of a host's connection slots: at most ``MQIC_HOST_MAX_CONNECTIONS`` contacts with a
    host run at once, across every worker of every node. A slot is held for one contact (its
    connection is closed when the contact ends) and its lease runs out if its holder dies."""

    host = models.ForeignKey(HpcHost, on_delete=models.CASCADE, related_name="slots")
    number = models.PositiveSmallIntegerField()
    holder = models.CharField(max_length=128, blank=True)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["host", "number"], name="one_row_per_host_slot")]

    def __str__(self):
        return f"{self.host} slot {self.number}: {self.holder or 'free'}"
