"""The console's django-q2 task: delivering the notifications that are due (``console.delivery``)."""

from . import delivery


def deliver_notifications() -> str:
    return f"delivered {delivery.deliver_due()} notification(s)"
