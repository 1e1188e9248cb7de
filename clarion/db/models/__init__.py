"""Tables. PostgreSQL is the source of truth; the same schema runs on SQLite (embedded mode).

Categories and types are free text, so a new category or subtype never needs a migration.
"""

from clarion.db.models.base import Base, BigIntPK, JSONType, UTCDateTime
from clarion.db.models.engine import Event, RuleRun, RuleSetting
from clarion.db.models.maintenance import RetentionCursor
from clarion.db.models.pipeline import (
    ApiKey,
    AuditEntry,
    DeadLetter,
    Delivery,
    DeliveryAttempt,
    FailedNotification,
    FailedRequest,
    InboxEvent,
    Notification,
    Subscriber,
)
from clarion.db.models.routing import (
    CategoryPreference,
    Fanout,
    Preference,
    ScheduledNotification,
    Template,
    Topic,
    TopicSubscriber,
)
from clarion.db.models.schedules import Schedule
from clarion.db.models.targets import PushSubscription, SubscriberAddress, WebhookEndpoint

__all__ = [
    "ApiKey",
    "AuditEntry",
    "Base",
    "BigIntPK",
    "CategoryPreference",
    "DeadLetter",
    "Delivery",
    "DeliveryAttempt",
    "Event",
    "FailedNotification",
    "FailedRequest",
    "Fanout",
    "InboxEvent",
    "JSONType",
    "Notification",
    "Preference",
    "PushSubscription",
    "RetentionCursor",
    "RuleRun",
    "RuleSetting",
    "Schedule",
    "ScheduledNotification",
    "Subscriber",
    "SubscriberAddress",
    "Template",
    "Topic",
    "TopicSubscriber",
    "UTCDateTime",
    "WebhookEndpoint",
]
