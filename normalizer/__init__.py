"""Every per-tag value rule, between the driver's raw reading and the wire: scale/offset, clamp,
deadband, and their inverse for writes.

Applied by the gateway's poller (:meth:`DeviceRules.apply`, once per poll result) and write path
(:meth:`DeviceRules.to_raw`), so the UNS and the historian carry engineering values. Imports nothing
of ours but :mod:`proto`.
"""

from normalizer.errors import NormalizerError, ValueRefused
from normalizer.rules import DeviceRules, TagSpec
from normalizer.transform import Transform

__all__ = ["DeviceRules", "NormalizerError", "TagSpec", "Transform", "ValueRefused"]
