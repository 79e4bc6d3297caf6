"""The wire contract of NEXUS Edge: UNS topics and data-point payloads.

Every daemon that puts bytes on the broker or reads them back goes through this package,
so the contract lives in exactly one place (see docs/contract.md).
"""

from proto.delivery import Ack, ack_topic, decode_ack, encode_acks
from proto.errors import ContractError, PayloadError, TopicError
from proto.points import (
    SCHEMA_VERSION,
    Batch,
    Point,
    Quality,
    decode_batch,
    decode_point,
    encode_batch,
    encode_point,
)
from proto.uns import BATCH_ROOT, DevicePath, TagPath, batch_topic, parse_batch_topic, validate_level

__all__ = [
    "BATCH_ROOT",
    "SCHEMA_VERSION",
    "Ack",
    "Batch",
    "ContractError",
    "DevicePath",
    "PayloadError",
    "Point",
    "Quality",
    "TagPath",
    "TopicError",
    "ack_topic",
    "batch_topic",
    "decode_ack",
    "decode_batch",
    "decode_point",
    "encode_acks",
    "encode_batch",
    "encode_point",
    "parse_batch_topic",
    "validate_level",
]
