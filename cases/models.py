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
# ``submitted`` to ``failed`` is a case that could never be sent (its folder went bad).
# ``submitted`` or ``submitting`` to ``completed``: the database was restored from a backup taken
# before the case ran, and its results are home (``services/restore.py``).
TRANSITIONS: dict[str | None, frozenset[str]] = {
    None: frozenset({S.SUBMITTED, S.REJECTED}),
    S.SUBMITTED: frozenset({S.SUBMITTING, S.CANCELLED, S.FAILED, S.COMPLETED}),
    S.SUBMITTING: frozenset({S.RUNNING, S.SUBMITTED, S.FAILED, S.CANCELLED, S.COMPLETED}),
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

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="cases",
        help_text="Whose case it is (the user folder of a per-user inbox); none: the operators'. "
        "A user who owns cases is deactivated, not deleted: the cases and their GPU time keep their owner.",
    )

    wanted_host = models.CharField(
        max_length=64, blank=True, help_text="The host its folder asks for (services/placement.py); empty: any."
    )
    wanted_group = models.CharField(
        max_length=64, blank=True, help_text="The GPU group its folder asks for; empty: any."
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

    restore_check = models.BooleanField(
        default=False,
        help_text="Waiting, but not sent until every host was asked for a run of it that the database "
        "does not know (set by after_restore: the database was restored from a backup).",
    )
    attempts = models.PositiveIntegerField(default=0, help_text="How many times a pueue add was tried.")
    error_count = models.PositiveSmallIntegerField(
        default=0, help_text="Unexpected errors in a row while in this status (a pass gives up after a few)."
    )
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
            ("view_all_cases", "Can see every owner's cases (an operator); without it, only one's own"),
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


class Attempt(models.Model):
    """One try of a case on a host, with a remote folder of its own.

    Every claim of a GPU group starts an attempt with a fresh random token, and the attempt's
    folder is ``<base dir>/<label>.<token>``: a late writer of an earlier attempt never touches
    the next one, and a task proves it belongs to the case by working in one of its attempts'
    folders, which a job cannot guess. The rows are also the case's remote history.
    """

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="attempt_rows")
    token = models.CharField(max_length=32, unique=True)
    remote_dir = models.CharField(max_length=1024)
    gpu_group = models.ForeignKey("resources.GpuGroup", null=True, on_delete=models.PROTECT, related_name="+")
    started_at = models.DateTimeField()
    task_id = models.PositiveIntegerField(null=True, blank=True)
    task_created_at = models.DateTimeField(null=True, blank=True)
    last_seen_task = models.JSONField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    outcome = models.TextField(
        blank=True, help_text="How the attempt ended (the reason of the move that ended it)."
    )
    # Remote hygiene (``services.hygiene``): what the job left came home, then its task and folder went.
    results_at = models.DateTimeField(null=True, blank=True, help_text="When its folder came home.")
    cleanup_started_at = models.DateTimeField(
        null=True, blank=True, help_text="When a worker decided to clean it up (a lease: a crashed one is redone)."
    )
    cleaned_at = models.DateTimeField(
        null=True, blank=True, help_text="When its pueue task was removed and its remote folder deleted."
    )
    kept = models.TextField(
        blank=True,
        help_text="Why its remote folder is kept on the host (its results could not come home): never cleaned up.",
    )
    # What the attempt ended with, kept when the case is tried again (the case shows its current one).
    exit_code = models.IntegerField(null=True, blank=True)
    log_tail = models.TextField(blank=True)
    result_path = models.CharField(
        max_length=4096,
        blank=True,
        help_text="Where its results are on this machine (earlier attempts: set aside).",
    )
    gpu_seconds = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text="GPU time it used: from the claim of its GPU group to its end, in whole seconds, times the "
        "group's devices (services/accounting.py); recorded when it ends.",
    )

    class Meta:
        ordering = ["started_at", "pk"]
        indexes = [
            models.Index(fields=["case", "ended_at"]),
            models.Index(fields=["cleaned_at", "ended_at"]),
            # Fair share reads the attempts under way and those that ended lately (services/usage.py):
            # from the index alone, without a visit to each row.
            models.Index(fields=["ended_at", "started_at", "case", "gpu_group"], name="attempt_recent_use"),
        ]

    def __str__(self):
        return f"attempt {self.token} of case {self.case_id}"

    @property
    def gpu_hours(self) -> float | None:
        return None if self.gpu_seconds is None else self.gpu_seconds / 3600


class GpuUsage(models.Model):
    """The GPU seconds of the attempts that ended in one month (the site's time zone), per case owner
    and host: the accounting ledger that ``/metrics`` and the GPU accounting page read.

    Each end of an attempt adds its GPU seconds here in the transaction that ends it
    (``services/accounting.py``). Rows are only ever added to, never pruned: a deleted case takes its
    attempts with it, but not the GPU time it used, so the totals (a Prometheus counter) never go
    down. Small: owners x hosts x months.
    """

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The cases' owner; none: the operators' cases.",
    )
    host = models.ForeignKey("resources.HpcHost", on_delete=models.PROTECT, related_name="+")
    month = models.DateField(help_text="The first day of the month the attempts ended in.")
    gpu_seconds = models.PositiveBigIntegerField(default=0)

    class Meta:
        verbose_name = "GPU usage"
        verbose_name_plural = "GPU usage"
        constraints = [
            # A NULL owner never equals another in a unique index: the operators' rows get their own.
            models.UniqueConstraint(
                fields=["owner", "host", "month"], condition=models.Q(owner__isnull=False), name="gpu_usage_once"
            ),
            models.UniqueConstraint(
                fields=["host", "month"], condition=models.Q(owner__isnull=True), name="gpu_usage_once_unowned"
            ),
        ]

    def __str__(self):
        return f"{self.owner or '(none)'} on {self.host_id} in {self.month:%Y-%m}: {self.gpu_seconds} GPU s"


class PassRun(models.Model):
    """One run of a pass (scan, submit, monitor, reconcile, ...): what it did, or why it failed."""

    class Outcome(models.TextChoices):
        OK = "ok"
        PARTIAL = "partial", "partial (a host did not answer, or a case had an error)"
        FAILED = "failed"

    kind = models.CharField(max_length=16)
    actor = models.CharField(max_length=150, help_text="Who ran it: a scheduler, the watcher or an operator.")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    summary = models.TextField()
    error = models.TextField(blank=True, help_text="Why the pass failed, when it did.")

    class Meta:
        ordering = ["-started_at", "-pk"]
        indexes = [
            models.Index(fields=["kind", "-started_at"]),
            models.Index(fields=["outcome", "-started_at"]),
        ]

    def __str__(self):
        return f"{self.kind} at {self.finished_at:%Y-%m-%d %H:%M:%S}: {self.outcome}"

    @property
    def seconds(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()
