"""Every per-tag value rule, between the driver's raw reading and the wire: linear scaling, units,
clamp, report by exception, edges, derived tags, aggregation windows and alarms, and the inverse
for writes.

Applied by the gateway's poller (:meth:`DeviceRules.apply`, once per poll result) and write path
(:meth:`DeviceRules.to_raw`), so the UNS and the historian carry engineering values. Imports nothing
of ours but :mod:`proto`.
"""

from normalizer.config import TAG_KEYS, AlarmLimits, Rules, parse_rules
from normalizer.errors import NormalizerError, RuleError, ValueRefused
from normalizer.rules import DeviceRules, TagSpec
from normalizer.transform import Transform

__all__ = ["TAG_KEYS", "AlarmLimits", "DeviceRules", "NormalizerError", "RuleError", "Rules", "TagSpec", "Transform",
           "ValueRefused", "parse_rules"]
