"""The console's own rows: the notifications it sent, what each user wants mailed, the permission
to read a case's results, and the admin index's entry of the GPU accounting page."""

from django.conf import settings
from django.db import models

from cases.models import Case, GpuUsage


class Notification(models.Model):
    """One event announced to the operators (a failed or stuck case, a host down or back): an
    outbox row, written in the same transaction as what it announces, delivered later.

    ``key`` names the event, not the pass that saw it: every worker of every node that sees the
    same event tries to insert the same key, and one wins. Each channel (mail, webhook) is
    ``pending`` until delivered (``sent``) or given up (``failed``: a permanent refusal, or too
    many tries); ``next_try_at`` says when the delivery task takes the row next (none: nothing
    left to do). What the mail server and the webhook answered is kept here, so a failed delivery
    is visible, never an exception in a pass.
    """

    class State(models.TextChoices):
        OFF = "off", "not configured"
        PENDING = "pending", "pending"
        SENT = "sent", "sent"
        FAILED = "failed", "given up"

    key = models.CharField(max_length=200, unique=True)
    event = models.CharField(max_length=32, db_index=True)
    subject = models.CharField(max_length=300)
    reason = models.TextField()
    url = models.CharField(max_length=1000)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    mailed_at = models.DateTimeField(null=True, blank=True)
    mail_error = models.TextField(blank=True)
    posted_at = models.DateTimeField(null=True, blank=True)
    webhook_error = models.TextField(blank=True)
    payload = models.JSONField(default=dict, help_text="The webhook's JSON body, with the event's stable id.")
    mail_to = models.JSONField(
        default=list,
        blank=True,
        help_text="The addresses its mail goes to, fixed when it was written (the operators' and the case "
        "owner's): every try mails the same people.",
    )
    mail_state = models.CharField(max_length=8, choices=State.choices, default=State.OFF)
    webhook_state = models.CharField(max_length=8, choices=State.choices, default=State.OFF)
    tries = models.PositiveSmallIntegerField(default=0)
    next_try_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self):
        return self.subject


class NotificationPreference(models.Model):
    """What a user wants mailed about the cases they own, besides their failures (always mailed to
    the owner's address): one row per user, which that user edits in the admin."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preference"
    )
    mail_on_completion = models.BooleanField(
        "mail me when my case completes",
        default=False,
        help_text="Failures of your cases are always mailed to your address; completions only when this is on.",
    )

    class Meta:
        verbose_name = "my notification choice"
        verbose_name_plural = "my notification choices"

    def __str__(self):
        return f"notification choices of {self.user}"


class CaseResults(Case):
    """A case's results folder and job log, as the results page shows them.

    A proxy, for its permission only: results are the users' data (and may be large), so reading
    them is granted on its own, apart from seeing the case.
    """

    class Meta:
        proxy = True
        default_permissions = ()
        permissions = [("view_results", "Can list and download a case's results and job log")]


class GpuAccounting(GpuUsage):
    """The ledger of GPU time as the admin index lists it: "GPU accounting", whose list is the
    accounting page (``admin.GpuAccountingAdmin``). A proxy, for that entry only: who may open it
    is ``views.ACCOUNTING_PERMISSION``, so it has no permissions of its own."""

    class Meta:
        proxy = True
        default_permissions = ()
        verbose_name = "GPU accounting"
        verbose_name_plural = "GPU accounting"
