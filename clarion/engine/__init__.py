"""The rule engine: rules that create notifications by themselves.

* **Scan rules** run on celery-beat (``every`` seconds) and look at data: a source
  database (links and campaigns), Clarion itself (queues, dead letters), a table of events.
* **Event rules** run for each event of their type sent to ``POST /v1/events``.

Each rule yields :class:`Candidate` notifications with a ``dedupe_key`` saying "this
condition, for this entity, in this window". The runner persists them through the same
``create`` function producers' requests go through, where the key is unique per
recipient: a rerun, two beat processes, a retry after a crash or overlapping runs never
create a notification twice.

Rules are found in the built-in packs, in the ``clarion.rules`` entry point group (a
producer's own package) and in ``CLARION_RULE_MODULES``; they are configured (on/off,
thresholds) by ``CLARION_RULES`` and by operators through the API, without code changes.
"""

from clarion.engine.rules import Candidate, Rule, RuleConfig, RuleRuntime, RunContext

__all__ = ["Candidate", "Rule", "RuleConfig", "RuleRuntime", "RunContext"]
