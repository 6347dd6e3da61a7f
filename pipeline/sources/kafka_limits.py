"""What Kafka accepts: the record size limit of a topic and which produce errors are worth retrying.

Why: a record over the broker's limit is refused every time, so retrying it stalls every device behind
it for good; a timeout or a leader change passes. The bridge cuts records by bytes below the limit,
retries only what can pass, and dead-letters the rest.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    NodeNotReadyError,
)

log = logging.getLogger("gridwatch.kafka")

DEFAULT_RECORD_LIMIT = 1_000_000  # Apache Kafka's default message.max.bytes is 1,048,588
RECORD_OVERHEAD = 1024  # record batch header, key, headers: what a value must leave of the limit

# Refused for what the record is, not for the state of the cluster: the same record fails again.
FATAL_ERRORS = frozenset({
    "MessageSizeTooLargeError", "RecordListTooLargeError", "CorruptRecordException", "InvalidMessageError",
    "InvalidRecordException", "InvalidTopicError", "TopicAuthorizationFailedError",
    "ClusterAuthorizationFailedError", "TransactionalIdAuthorizationFailedError", "UnsupportedVersionError",
    "UnsupportedForMessageFormatError", "PolicyViolationError",
})


def is_retriable(exc: BaseException) -> bool:
    """True for errors that can pass with time (timeouts, leadership, network), False for a refused record.

    aiokafka marks broker errors with ``retriable``; a client-side timeout is not marked but passes too.
    An unknown error is retried (loudly, by the caller): dropping a reading on a bug would lose it.
    """
    name = type(exc).__name__
    if name in FATAL_ERRORS or name.endswith("AuthorizationFailedError"):
        return False
    if isinstance(exc, KafkaTimeoutError | KafkaConnectionError | NodeNotReadyError | TimeoutError):
        return True
    return True


def is_size_error(exc: BaseException) -> bool:
    return type(exc).__name__ in ("MessageSizeTooLargeError", "RecordListTooLargeError")


async def topic_record_limit(bootstrap: str, topic: str, timeout: float = 5.0) -> int | None:
    """The topic's ``max.message.bytes`` as the broker reports it; None when it does not say (the
    embedded Tansu broker reports no configs) or cannot be asked."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        responses = await asyncio.wait_for(
            admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, None)]), timeout)
        return parse_record_limit(responses)
    except Exception as e:  # noqa: BLE001 - any failure: fall back to the configured limit
        log.info("could not read max.message.bytes of %s from the broker (%s: %s)", topic, type(e).__name__, e)
        return None
    finally:
        await admin.close()


def parse_record_limit(responses: list) -> int | None:  # type: ignore[type-arg]
    """``max.message.bytes`` out of DescribeConfigs responses (resources: error, message, type, name, configs)."""
    for resp in responses:
        for res in resp.resources:
            for entry in res[4]:
                if entry[0] == "max.message.bytes" and entry[1] not in (None, ""):
                    try:
                        return int(entry[1])
                    except ValueError:
                        return None
    return None


def record_budget(broker_limit: int | None, configured: int, producer_max_request: int) -> int:
    """Bytes one record value may have: below the broker's limit (the configured one when the broker
    does not say; the smaller when both do) and the producer's request size."""
    limits = [producer_max_request]
    if broker_limit:
        limits.append(broker_limit)
    if configured or not broker_limit:
        limits.append(configured or DEFAULT_RECORD_LIMIT)
    return max(4096, min(limits) - RECORD_OVERHEAD)
