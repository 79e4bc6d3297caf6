"""The values that cross :class:`nexus.mqtt.MqttClient`'s API: a received message, a will, PUBACK codes.
Import them from :mod:`nexus.mqtt`, which re-exports them."""

from __future__ import annotations

from dataclasses import dataclass

#: PUBACK reason 0x10 (MQTT 5): the broker took the message but no subscription matched it, so
#: nobody will receive it. A future returned by ``MqttClient.publish`` resolves to the reason code.
NO_MATCHING_SUBSCRIBERS = 0x10


@dataclass(frozen=True, slots=True)
class Message:
    """A received message; pass it back to ``MqttClient.ack`` once it is safely stored."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int
    generation: int  #: connection number it arrived on


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True
