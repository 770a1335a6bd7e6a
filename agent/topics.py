"""driftline's topics: their names beyond the settings, and creating the missing ones at start.

A worker creates its topics once, before anything consumes or produces: :class:`TopicSetup` is the
app's first dependency, so Faust's consumer (the alerts agent) never auto-creates the alerts topic
with the broker's default partition count, and the serving loop finds its topics in place.

May import: :mod:`agent.kafka`, :mod:`agent.settings`.
"""

from __future__ import annotations

import logging
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from mode import Service

from agent.kafka import aiokafka_options
from agent.settings import Settings

__all__ = ["TopicSetup", "ensure_topics", "join_changelog_topic", "stats_topic"]

log = logging.getLogger(__name__)


def join_changelog_topic(settings: Settings) -> str:
    """The outcome join's topic: predictions and outcomes by join partition, and the join's changelog
    (:mod:`agent.monitoring.join`)."""
    return f"{settings.app_id}-join-changelog"


def stats_topic(settings: Settings) -> str:
    """The fleet's statistics topic: each worker's blocks, keyed by model, for the model's one monitor
    (:mod:`agent.monitoring.fleet`)."""
    return f"{settings.app_id}-monitor-stats"


async def ensure_topics(settings: Settings) -> None:
    """Creates driftline's topics that do not exist yet, with the configured partitions.

    The outcome join's topic gets the requests topic's partition count, whatever it is: its
    partitions are the join's, so that a worker that is given requests is given about as much of
    the join.
    """
    t = settings.topics
    wanted = [t.requests, t.predictions, t.outcomes, t.alerts, t.dead_letters]
    admin = AIOKafkaAdminClient(**aiokafka_options(settings.kafka))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if missing:
            await admin.create_topics(
                [
                    NewTopic(
                        n,
                        num_partitions=t.partitions,
                        replication_factor=t.replication_factor,
                        # The alerts topic keeps every alert (the broker's default would drop them
                        # after 7 days): a receiver that must not miss one can replay it.
                        topic_configs={"retention.ms": "-1"} if n == t.alerts else {},
                    )
                    for n in missing
                ]
            )
            log.info("created topics %s with %d partitions", ", ".join(missing), t.partitions)
        changelog = join_changelog_topic(settings)
        if settings.monitoring.concept_drift and changelog not in existing:
            [described] = await admin.describe_topics([t.requests])
            partitions = len(described["partitions"]) or t.partitions
            ttl_ms = int(settings.monitoring.join_ttl_s * 1000)
            await admin.create_topics(
                [
                    NewTopic(
                        changelog,
                        num_partitions=partitions,
                        replication_factor=t.replication_factor,
                        # Retention deletes whole closed segments only: without segment.ms the active
                        # segment (a week or a GiB by default) would keep everything at a low rate.
                        # Every key is written once (a batch, an outcome's source): no compaction.
                        topic_configs={
                            "cleanup.policy": "delete",
                            "retention.ms": str(2 * ttl_ms),
                            "segment.ms": str(max(ttl_ms, 60_000)),
                        },
                    )
                ]
            )
        stats = stats_topic(settings)
        if settings.monitoring.enabled and settings.monitoring.fleet and stats not in existing:
            replay_ms = int(settings.monitoring.stats_replay_s * 1000)
            await admin.create_topics(
                [
                    NewTopic(
                        stats,
                        num_partitions=t.partitions,
                        replication_factor=t.replication_factor,
                        # Read back by a model's new monitor as far as stats_replay_s: kept twice as
                        # long, in segments of a tenth of it so that old ones are dropped in time.
                        topic_configs={
                            "cleanup.policy": "delete",
                            "retention.ms": str(2 * replay_ms),
                            "segment.ms": str(max(replay_ms // 10, 60_000)),
                        },
                    )
                ]
            )
    finally:
        await admin.close()


class TopicSetup(Service):
    """Runs :func:`ensure_topics` once when the app starts, before its other dependencies."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings

    async def on_start(self) -> None:
        await ensure_topics(self.settings)
