"""The wire contract of NEXUS Edge: UNS topics and data-point payloads.

Every daemon that puts bytes on the broker or reads them back goes through this package,
so the contract lives in exactly one place (see docs/contract.md).
"""

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
    "Batch",
    "ContractError",
    "DevicePath",
    "PayloadError",
    "Point",
    "Quality",
    "TagPath",
    "TopicError",
    "batch_topic",
    "decode_batch",
    "decode_point",
    "encode_batch",
    "encode_point",
    "parse_batch_topic",
    "validate_level",
]
