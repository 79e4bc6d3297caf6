"""Turn raw readings into clean values: scale/offset, clamp, deadband.

Applied by the gateway between the driver and the wire, so the UNS and the historian carry
engineering values. Unit conversion and expressions build on this (see the gateway issue list).
"""

from normalizer.transform import Transform

__all__ = ["Transform"]
