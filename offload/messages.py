"""Effect messages in Celery's own format, pushed to Redis in one round trip for any number.

An effect's message is always the same but for two things: the effect id (its only argument)
and the message's own ids. So the message of each task is built once, by Celery
(``app.amqp.as_task_v2``, task protocol 2) and shaped as kombu's Redis transport stores it;
a publish fills in the ids and LPUSHes it onto the task's queue. That LPUSH is what kombu
ends with too, after ~0.6 ms of routing, option merging and config lookups per message
(docs/BENCHMARKS.md). Several messages go in one pipeline. The worker and Flower read these
messages as Celery's own (tests/test_messages.py checks it against the pinned versions).

Messages go through a redis-py client that kombu's transport made (the broker URL, its socket
timeouts and keepalives, TLS or Sentinel), kept for the life of the process.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterable
from functools import cache
from typing import Any

from celery import current_app
from celery.utils.nodenames import anon_nodename

# What a message is sent for: (task name, effect id, queue); queue "" is the task's route.
type Outgoing = tuple[str, int, str]

# The rest of a protocol-2 body after the arguments: no callbacks, errbacks, chain or chord.
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@cache
def _template(task_name: str, queue: str, pid: int) -> tuple[str, str]:
    """(queue, message) for ``task_name`` on ``queue`` (its route if empty): the encoded
    message with %-placeholders for its ids and its body. Per process, since Celery's
    ``origin`` header names the process."""
    app = current_app
    queue = queue or app.amqp.router.route({}, task_name)["queue"].name
    task = app.tasks[task_name]
    # No time limits in the message: the worker applies its own (EFFECT_TIME_LIMIT as the
    # worker read it), where Celery would copy the publisher's.
    headers, properties, _, _ = app.amqp.as_task_v2(
        "%(id)s", task_name, args=(0,), kwargs={}, ignore_result=task.ignore_result,
        argsrepr="%(argsrepr)s", kwargsrepr="{}", origin=anon_nodename(),
        reply_to=app.thread_oid,
    )  # fmt: skip
    # What kombu's Redis transport adds (kombu.transport.virtual.Channel.prepare_message and
    # basic_publish): the body base64-encoded, published to the default exchange with the
    # queue's name as routing key, persistent, priority 0, and a delivery tag (the unique
    # task id serves).
    message = {
        "body": "%(body)s",
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            **properties,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": "%(id)s",
        },
    }
    encoded = json.dumps(message).replace("%", "%%").replace("%%(", "%(")
    return queue, encoded


def message(task_name: str, effect_id: int, queue: str = "") -> tuple[str, bytes]:
    """The queue and the encoded message that runs ``task_name`` on effect ``effect_id``."""
    queue, template = _template(task_name, queue, os.getpid())
    body = json.dumps([[effect_id], {}, EMBED]).encode()
    values = {
        "id": str(uuid.uuid4()),
        "argsrepr": f"({effect_id},)",
        "body": base64.b64encode(body).decode(),
    }
    return queue, (template % values).encode()


@cache
def client(pid: int) -> Any:
    """This process's redis-py client of the broker, made by kombu's transport (its URL, socket
    options, TLS or Sentinel), on a connection kept for the life of the process."""
    connection = current_app.connection_for_write()
    channel: Any = connection.default_channel  # kombu's Redis channel (untyped)
    with channel.conn_or_acquire() as client:
        client._offload_connection = connection  # the channel owns the client's pool
        return client


def push(effects: Iterable[Outgoing]) -> None:
    """LPUSH the messages of ``(task name, effect id, queue)`` in one round trip.

    Raises what the broker connection raises; then any of them may or may not have arrived
    (the ledger's claim makes a second copy harmless).
    """
    messages = [message(*effect) for effect in effects]
    if not messages:
        return
    redis = client(os.getpid())
    if len(messages) == 1:
        redis.lpush(*messages[0])
        return
    with redis.pipeline(transaction=False) as pipe:
        for queue, encoded in messages:
            pipe.lpush(queue, encoded)
        pipe.execute()
