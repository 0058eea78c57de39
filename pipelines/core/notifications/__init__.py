"""Notifications that reach people: one typed message per event of the loop, delivered to the channels of
``pipelines/conf/notifications.yaml`` (a log, an SMTP server, a webhook such as Slack's or Teams').

:mod:`.message` builds the messages (pure), :mod:`.config` reads and checks the channels, :mod:`.channels` sends
one message to one channel, :mod:`.deliver` sends it to every channel that wants its kind and never raises: a
failing channel is logged and counted in the warehouse table ``notification_log``. Airflow's side (a
``BaseNotifier``) is ``dags/_notify.py``.
"""

from pipelines.core.notifications.config import NotificationsConfig, load_notifications
from pipelines.core.notifications.deliver import DeliveryReport, deliver, delivery_counts, mark_notified, notified
from pipelines.core.notifications.message import KINDS, Kind, Notification

__all__ = [
    "KINDS",
    "DeliveryReport",
    "Kind",
    "Notification",
    "NotificationsConfig",
    "deliver",
    "delivery_counts",
    "load_notifications",
    "mark_notified",
    "notified",
]
