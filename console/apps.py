from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The operations console: the pages that read both apps (the dashboard, a host's remote
    state, its orphan tasks, a case's results, the live endpoints, ``/metrics``) and the
    notifications. It sits on top: it imports ``cases`` and ``resources``, and nothing imports it."""

    name = "console"
    verbose_name = "Operations console"

    def ready(self):
        from django.db.models.signals import post_save

        from cases.models import CaseEvent, PassRun
        from resources.contact import host_down, host_up

        from . import notifications

        post_save.connect(notifications.on_case_event, sender=CaseEvent, dispatch_uid="mqic-notify-failed")
        post_save.connect(notifications.on_pass_run, sender=PassRun, dispatch_uid="mqic-notify-stuck")
        host_down.connect(notifications.on_host_down, dispatch_uid="mqic-notify-host-down")
        host_up.connect(notifications.on_host_up, dispatch_uid="mqic-notify-host-up")
