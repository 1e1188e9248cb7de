"""The Celery app factory: one app per Settings, the same for worker, beat and API."""

from __future__ import annotations

import gc
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown
from kombu import Exchange, Queue

from clarion import exposition, metrics, telemetry
from clarion.core import queues
from clarion.settings import Settings
from clarion.workers import heartbeat, queue_metrics

RESTORE_INTERVAL_SECONDS = 5


def celery_config(settings: Settings) -> dict:
    """Celery settings that matter, with the reason for each in DESIGN.md and docs/."""
    broker: dict = {"broker_url": settings.broker_url}
    if settings.broker_url.startswith("sqla+"):
        # kombu's SQL transport hands its options to create_engine(): engine options only.
        # Its parameters are task messages: kept out of logged errors like the app's own.
        transport_options: dict = {
            "connect_args": {"timeout": 30, "check_same_thread": False},
            "hide_parameters": True,
        }
        # Its subclass that a publish wakes (the embedded mode: POST → inbox without a
        # polling delay). A transport given by path must not come from the URL (kombu).
        broker = {
            "broker_url": settings.broker_url.removeprefix("sqla+"),
            "broker_transport": "clarion.workers.sqlbroker:Transport",
        }
    else:
        if settings.broker_url.startswith("redis://"):
            # A worker that survives a Redis restart (clarion.workers.redisbroker).
            broker["broker_transport"] = "clarion.workers.redisbroker:Transport"
        transport_options = {
            "visibility_timeout": settings.broker_visibility_timeout,
            # Every worker looks for a dead holder's messages this often (kombu's default
            # is every 100 s); see clarion.workers.heartbeat.
            "unacked_restore_interval": RESTORE_INTERVAL_SECONDS,
            "unacked_restore_throttle": 1,
            # A worker killed during a restore holds its lock this long, not kombu's 300 s;
            # two restores racing on one message put it back once (kombu's WATCH).
            "unacked_mutex_expire": 10,
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
        }
    transport_options.update(settings.broker_transport_options)
    return {
        **broker,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": settings.broker_publish_timeout,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "result_backend": None,
        # A task is acknowledged after it ran; a killed worker's task is redelivered.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": settings.worker_prefetch_multiplier,
        # Each queue bound to its own exchange: a bare Queue(name) would bind every queue to
        # the default queue's exchange and key, and one publish there would reach them all.
        "task_queues": [Queue(n, Exchange(n), routing_key=n) for n in queues.ALL_QUEUES],
        "task_default_queue": queues.CREATE,
        "task_create_missing_queues": False,
        # Fail fast when the broker is down: the API answers 503 instead of hanging.
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        "timezone": "UTC",
        "enable_utc": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": settings.worker_task_events,
        "task_send_sent_event": False,
        # Filled by the processes that run beat (`clarion beat`, `clarion dev`): building it
        # loads every rule, which an API process or a plain worker has no use for.
        "beat_schedule": {},
    }


def beat_schedule(settings: Settings) -> dict:
    """The sweeper, scheduled releases, recurring schedules, ended snoozes, digests and
    retention (on the periodic queue), and every scan rule at its own interval (on the
    engine queue).

    Rules disabled by settings are scheduled too: an operator's override may enable them
    without a restart, and a disabled rule's run ends at once."""
    from clarion.engine.registry import Rules

    def periodic(task: str, every: float) -> dict:
        # A run that could not start before the next one is due is dropped, not queued.
        return {
            "task": task,
            "schedule": every,
            "options": {"queue": queues.PERIODIC, "expires": every},
        }

    schedule = {
        "sweep-deliveries": periodic("clarion.sweep", settings.sweeper_interval_seconds),
        # Scheduled sends and digests: the database holds what is due, beat only asks.
        "release-scheduled": periodic(
            "clarion.schedule.release", settings.schedule_interval_seconds
        ),
        "run-schedules": periodic("clarion.schedules.run", settings.schedule_interval_seconds),
        # Ended snoozes come back (live) within one interval, like scheduled sends.
        "release-snoozed": periodic("clarion.snooze.release", settings.schedule_interval_seconds),
        # Retention: bounded batches within a time budget, so the periodic queue's other
        # tasks wait seconds at most (clarion.core.retention).
        "retention": periodic("clarion.retention.run", settings.retention_interval_seconds),
        "send-digests": periodic("clarion.digests.run", settings.digest_interval_seconds),
    }
    for key, every in Rules(settings).scan_schedule().items():
        schedule[f"rule:{key}"] = {
            "task": "clarion.rules.run",
            "schedule": every,
            "args": [key],
            # A run that could not start before the next one is due is dropped, not queued.
            "options": {"queue": queues.ENGINE, "expires": every},
        }
    return schedule


def tune_gc() -> None:
    """Fewer, cheaper garbage collections in a worker process, as in the API process.

    What was loaded before the fork is frozen out of the collector's scans, and young
    collections run every 50,000 allocations instead of 700: a create task of a fan-out
    batch allocates a few dicts and lists per recipient, and with the default thresholds
    each of its collections walked the whole imported heap (docs/benchmarks/fanout.md)."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 1000)


def create_celery(settings: Settings, runtime: Any) -> Celery:
    """Build the Celery app; tasks reach the database through ``app.clarion``, the
    :class:`clarion.runtime.Runtime` that builds it (``Runtime(settings).celery``): the
    runtime sits above the workers, so they never import it."""
    from clarion.settings import LogSettings
    from clarion.workers import logcontext, tasks

    logcontext.connect(LogSettings().log_format)
    app = Celery("clarion", set_as_current=False)
    app.config_from_object(celery_config(settings))
    app.clarion = runtime
    tasks.register(app)
    queue_metrics.stamp()  # the publish time, for the oldest message's age
    heartbeat.install(app)

    @worker_process_init.connect(weak=False)
    def _own_connections(**_: object) -> None:
        # A prefork child must not reuse the parent's pooled database connections.
        app.clarion.engine.dispose(close=False)
        tune_gc()
        # Tracing starts in each child, after the fork (the exporter's thread would not
        # survive it), as the Celery instrumentation requires.
        telemetry.setup("clarion-worker")

    @worker_process_shutdown.connect(weak=False)
    def _close_channels(**_: object) -> None:
        app.clarion.channels.close()
        telemetry.flush()

    return app


@worker_process_init.connect(weak=False, dispatch_uid="clarion-metrics-up")
def _process_up(**_: object) -> None:
    metrics.WORKER_PROCESSES.inc()


@worker_process_shutdown.connect(weak=False, dispatch_uid="clarion-metrics-down")
def _process_down(**_: object) -> None:
    metrics.WORKER_PROCESSES.dec()
    exposition.process_exited()  # its live gauges go; its counters stay in the sums
