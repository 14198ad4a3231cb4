"""A case is one simulation folder on its way through the remote GPU cluster.

Its ``status`` only changes through ``cases.services.transitions.transition``, a
compare-and-swap that also writes a ``CaseEvent`` saying who moved it and why. The
allowed moves are written down once, in ``TRANSITIONS``.
"""

from django.conf import settings
from django.db import models


class CaseStatus(models.TextChoices):
    SUBMITTED = "submitted"
    SUBMITTING = "submitting"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


S = CaseStatus

# Every legal move of a case. ``None`` is "not registered yet". A move back to
# ``submitted`` is a retry: by the reconciler when nothing ran remotely, or by a user.
TRANSITIONS: dict[str | None, frozenset[str]] = {
    None: frozenset({S.SUBMITTED, S.REJECTED}),
    S.SUBMITTED: frozenset({S.SUBMITTING, S.CANCELLED}),
    S.SUBMITTING: frozenset({S.RUNNING, S.SUBMITTED, S.FAILED, S.CANCELLED}),
    S.RUNNING: frozenset({S.COMPLETED, S.FAILED, S.CANCELLED, S.SUBMITTED}),
    S.FAILED: frozenset({S.SUBMITTED}),
    S.CANCELLED: frozenset({S.SUBMITTED}),
    S.REJECTED: frozenset({S.SUBMITTED}),
    S.COMPLETED: frozenset(),
}

# Statuses in which a case may hold a GPU group, and those in which it never does.
HOLDS_GPU = frozenset({S.SUBMITTING, S.RUNNING})
FINISHED = frozenset({S.COMPLETED, S.FAILED, S.CANCELLED, S.REJECTED})


class Case(models.Model):
    name = models.CharField(max_length=255)
    source_path = models.CharField(max_length=1024, unique=True)
    status = models.CharField(max_length=16, choices=CaseStatus.choices, db_index=True)
    label = models.CharField(
        "remote label", max_length=128, unique=True, null=True, blank=True, help_text="The pueue label."
    )

    gpu_group = models.ForeignKey(
        "resources.GpuGroup", null=True, blank=True, on_delete=models.PROTECT, related_name="cases"
    )
    lease_generation = models.PositiveIntegerField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="While a worker submits or finishes the case: after this a peer may take it over.",
    )
    remote_dir = models.CharField(max_length=1024, blank=True)
    upload_percent = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="How much of the case is uploaded, while a large upload runs."
    )
    pueue_task_id = models.PositiveIntegerField(null=True, blank=True)
    pueue_task_created_at = models.DateTimeField(null=True, blank=True)
    last_seen_task = models.JSONField(null=True, blank=True, help_text="The remote task as last seen.")
    task_missing_since = models.DateTimeField(
        null=True, blank=True, help_text="When the running task was first found gone from pueue."
    )

    attempts = models.PositiveIntegerField(default=0)
    exit_code = models.IntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    log_tail = models.TextField(blank=True)
    result_path = models.CharField(max_length=1024, blank=True)

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    submitting_at = models.DateTimeField(null=True, blank=True)
    running_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "created_at"])]
        # The operator actions of the admin, each granted on its own (the admin never edits a status).
        permissions = [
            ("retry_case", "Can retry a failed, cancelled or rejected case"),
            ("cancel_case", "Can cancel a case (kills its remote task)"),
            ("mark_failed_case", "Can mark a case failed and release its GPU group"),
            ("reconcile_case", "Can run a reconciliation pass now"),
            ("manage_orphans", "Can kill or adopt orphan remote tasks"),
        ]

    def __str__(self):
        return self.name


class CaseEvent(models.Model):
    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="events")
    from_status = models.CharField(max_length=16, choices=CaseStatus.choices, blank=True)
    to_status = models.CharField(max_length=16, choices=CaseStatus.choices, blank=True)
    reason = models.TextField()
    detail = models.JSONField(default=dict, blank=True)
    actor = models.CharField(max_length=150, default="system")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self):
        return f"{self.from_status or '∅'} → {self.to_status or '='}: {self.reason}"


class Installation(models.Model):
    """One row: the key that makes this installation's remote labels its own.

    Another MQIC (or an earlier database on the same host) may also have had a case 7;
    the key in every label keeps their tasks apart.
    """

    key = models.CharField(max_length=16, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.key


class PassRecord(models.Model):
    """The last run of each kind of pass (scan, submit, monitor, reconcile), for the overview."""

    kind = models.CharField(max_length=16, unique=True)
    finished_at = models.DateTimeField()
    summary = models.TextField()
    ok = models.BooleanField(default=True, help_text="False when a host could not be reached.")

    def __str__(self):
        return f"{self.kind} at {self.finished_at:%H:%M:%S}: {self.summary}"
