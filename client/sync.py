"""A synchronous facade for scripts: SyncProducer, SyncConsumer, SyncAdmin.

Each object runs its own asyncio event loop in a daemon thread and forwards calls to the asyncio
client living there (asyncio.run_coroutine_threadsafe), so it can be used from plain code or
threads:

    from client.sync import SyncProducer, SyncConsumer, SyncAdmin
    with SyncProducer("127.0.0.1:9092", acks="all") as producer:
        future = producer.send("orders", b"v")     # concurrent.futures.Future[RecordMetadata]
        producer.flush()
        meta = producer.send_and_wait("orders", b"w")

`SyncProducer.send` waits (up to max_block_ms) for buffer room, as Java's send does; sends from
one thread keep their order (they pass one asyncio.Lock, which is FIFO). Every call is bounded:
the clients' own timeouts apply, and `close()` stops the loop thread. The facade costs a thread
hop per call (tens of µs), so it is for scripts, not for throughput.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from client.admin import Admin, ClusterDescription, ConfigEntry, NewTopic, TopicDescription
from client.consumer import Consumer
from client.producer import Producer
from client.record import ConsumerRecord, Header, RecordMetadata, TopicPartition

__all__ = ["SyncAdmin", "SyncConsumer", "SyncProducer"]

T = TypeVar("T")
LOOP_STOP_TIMEOUT_S = 30.0


class _LoopThread:
    """An event loop running in a daemon thread until `stop()`."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async def call() -> T:
            return fn(*args, **kwargs)
        return self.run(call())

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(LOOP_STOP_TIMEOUT_S)
        if not self._thread.is_alive():
            self.loop.close()


class _SyncClient:
    _loop_thread: _LoopThread

    def _start(self, name: str, make: Callable[[], Any]) -> Any:
        self._loop_thread = _LoopThread(name)
        try:
            async def create() -> Any:
                client = make()
                await client.start()
                return client
            return self._loop_thread.run(create())
        except BaseException:
            self._loop_thread.stop()
            raise

    def _stop(self, close: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            if not self._loop_thread.loop.is_closed():
                self._loop_thread.run(close())
        finally:
            self._loop_thread.stop()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError


class SyncProducer(_SyncClient):
    """Producer(...) with blocking calls; `send` returns a concurrent.futures.Future."""

    def __init__(self, bootstrap_servers: str | Sequence[str] = "127.0.0.1:9092", **config: Any) -> None:
        self._producer: Producer = self._start("replog-sync-producer", lambda: Producer(bootstrap_servers, **config))
        self._lock = self._loop_thread.call(asyncio.Lock)

    async def _send(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> RecordMetadata:
        async with self._lock:
            future = await self._producer.send_when_ready(*args, **kwargs)
        return await future

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None, *, partition: int | None = None,
             headers: Iterable[Header] | None = None,
             timestamp_ms: int | None = None) -> concurrent.futures.Future[RecordMetadata]:
        kwargs = {"partition": partition, "headers": list(headers) if headers else None, "timestamp_ms": timestamp_ms}
        return self._loop_thread.submit(self._send((topic, value, key), kwargs))

    def send_and_wait(self, topic: str, value: bytes | None = None, key: bytes | None = None,
                      **kwargs: Any) -> RecordMetadata:
        return self.send(topic, value, key, **kwargs).result()

    def flush(self, timeout_ms: int | None = None) -> None:
        self._loop_thread.run(self._producer.flush(timeout_ms))

    def partitions_for(self, topic: str) -> list[int]:
        return self._loop_thread.run(self._producer.partitions_for(topic))

    def close(self, timeout_ms: int | None = None) -> None:
        self._stop(lambda: self._producer.close(timeout_ms))

    def __enter__(self) -> SyncProducer:
        return self


class SyncConsumer(_SyncClient):
    """Consumer(...) with blocking calls."""

    def __init__(self, bootstrap_servers: str | Sequence[str] = "127.0.0.1:9092", **config: Any) -> None:
        self._consumer: Consumer = self._start("replog-sync-consumer", lambda: Consumer(bootstrap_servers, **config))

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        self._loop_thread.call(self._consumer.assign, list(partitions))

    def assignment(self) -> set[TopicPartition]:
        return self._loop_thread.call(self._consumer.assignment)

    def subscribe(self, topics: Iterable[str] | None = None, **kwargs: Any) -> None:
        """Group subscription (Consumer(group_id=...)): a topic list or pattern=; callbacks
        (on_partitions_revoked / _assigned / _lost) run on the client's loop thread."""
        self._loop_thread.call(lambda: self._consumer.subscribe(None if topics is None else list(topics), **kwargs))

    def unsubscribe(self) -> None:
        self._loop_thread.call(self._consumer.unsubscribe)

    def subscription(self) -> set[str]:
        return self._loop_thread.call(self._consumer.subscription)

    def commit(self, offsets: Mapping[TopicPartition, int] | None = None) -> None:
        self._loop_thread.run(self._consumer.commit(None if offsets is None else dict(offsets)))

    def committed(self, tp: TopicPartition) -> int | None:
        return self._loop_thread.run(self._consumer.committed(tp))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._loop_thread.call(self._consumer.seek, tp, offset)

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        self._loop_thread.call(self._consumer.seek_to_beginning, *partitions)

    def seek_to_end(self, *partitions: TopicPartition) -> None:
        self._loop_thread.call(self._consumer.seek_to_end, *partitions)

    def position(self, tp: TopicPartition) -> int:
        return self._loop_thread.run(self._consumer.position(tp))

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> list[ConsumerRecord]:
        return self._loop_thread.run(self._consumer.poll(timeout_ms, max_records))

    def highwater(self, tp: TopicPartition) -> int | None:
        return self._loop_thread.call(self._consumer.highwater, tp)

    def beginning_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return self._loop_thread.run(self._consumer.beginning_offsets(list(partitions)))

    def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        return self._loop_thread.run(self._consumer.end_offsets(list(partitions)))

    def close(self) -> None:
        self._stop(self._consumer.close)

    def __enter__(self) -> SyncConsumer:
        return self


class SyncAdmin(_SyncClient):
    """Admin(...) with blocking calls."""

    def __init__(self, bootstrap_servers: str | Sequence[str] = "127.0.0.1:9092", **config: Any) -> None:
        self._admin: Admin = self._start("replog-sync-admin", lambda: Admin(bootstrap_servers, **config))

    def create_topic(self, name: str, partitions: int = -1, replication_factor: int = -1,
                     configs: Mapping[str, str] | None = None, *, validate_only: bool = False) -> None:
        self._loop_thread.run(self._admin.create_topic(name, partitions, replication_factor, configs,
                                                       validate_only=validate_only))

    def create_topics(self, topics: Iterable[NewTopic], *, validate_only: bool = False) -> None:
        self._loop_thread.run(self._admin.create_topics(list(topics), validate_only=validate_only))

    def delete_topic(self, name: str) -> None:
        self._loop_thread.run(self._admin.delete_topic(name))

    def delete_topics(self, names: Iterable[str]) -> None:
        self._loop_thread.run(self._admin.delete_topics(list(names)))

    def list_topics(self, *, include_internal: bool = False) -> list[str]:
        return self._loop_thread.run(self._admin.list_topics(include_internal=include_internal))

    def describe_topics(self, names: Iterable[str] | None = None) -> dict[str, TopicDescription]:
        return self._loop_thread.run(self._admin.describe_topics(None if names is None else list(names)))

    def describe_cluster(self) -> ClusterDescription:
        return self._loop_thread.run(self._admin.describe_cluster())

    def describe_configs(self, name: str, *, resource: str = "topic",
                         keys: Iterable[str] | None = None) -> dict[str, ConfigEntry]:
        return self._loop_thread.run(self._admin.describe_configs(
            name, resource=resource, keys=None if keys is None else list(keys)))

    def alter_configs(self, name: str, changes: Mapping[str, str | None], *, resource: str = "topic",
                      validate_only: bool = False) -> None:
        self._loop_thread.run(self._admin.alter_configs(name, dict(changes), resource=resource,
                                                        validate_only=validate_only))

    def close(self) -> None:
        self._stop(self._admin.close)

    def __enter__(self) -> SyncAdmin:
        return self
