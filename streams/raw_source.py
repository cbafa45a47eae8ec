"""What every Quix Source that writes the raw kline topic shares: its topic and how it is added.

Add such a source with ``source.add_to(app)``: ``app.add_source(source)`` without a topic would
use ``default_topic()``, whose name Quix prefixes with ``source__``.
"""

from __future__ import annotations

from quixstreams import Application
from quixstreams.models.topics import Topic


class RawTopicSourceMixin:
    """For Source subclasses with a ``raw_topic`` name: str keys, JSON values."""

    raw_topic: str

    def topic(self, app: Application) -> Topic:
        return app.topic(
            self.raw_topic, key_serializer="str", key_deserializer="str", value_serializer="json"
        )

    def add_to(self, app: Application) -> Topic:
        topic = self.topic(app)
        app.add_source(self, topic=topic)  # type: ignore[arg-type]
        return topic

    def default_topic(self) -> Topic:
        return Topic(
            name=self.raw_topic, key_serializer="str", key_deserializer="str", value_serializer="json"
        )
