"""kopf's side: which events call which reconcile, kopf's own settings, errors as kopf wants them.

The handlers are plain functions taking kopf's keyword arguments (``spec``, ``meta``, ``status``,
``patch``, ``logger``, ``retry``, ``memo`` and the NexusPlant index), registered by :func:`register` on an
explicit registry, so the tests call them exactly as kopf does, without a Kubernetes API server.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from nexus_operator import conditions as c
from nexus_operator.errors import CoreRefused, TemporaryError
from nexus_operator.reconcile import Reconciler
from nexus_operator.resources import DEVICES, GROUP, PLANTS, VERSION, PlantIndex, plain
from nexus_operator.settings import Settings

#: the finalizer on every NexusDevice: the device is deleted from gateway_core before the resource goes
FINALIZER = f"{GROUP}/nexus-operator"
log = logging.getLogger("nexus_operator")


def configure(settings: kopf.OperatorSettings) -> None:
    """kopf's settings: our finalizer; progress and diff-base in annotations of our group (the status is
    ours and fully specified in the CRD, so kopf keeps nothing there); no peering objects (one replica,
    Recreate); no scanning of CRDs or namespaces."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.peering.standalone = True
    # no watch of CRDs and namespaces (cluster-scoped permissions): the CRDs are installed before the
    # operator (Helm's crds/), and the namespaces are named in the settings
    settings.scanning.disabled = True
    settings.posting.level = logging.WARNING  # warnings and errors of a resource become its events


async def index_plant(*, namespace: str | None, name: str, spec: Mapping[str, Any], **_: Any) -> dict[Any, Any]:
    """The NexusPlant index: (namespace, name) -> its spec (UNS level defaults)."""
    return {(namespace, name): plain(spec)}


async def apply_device(*, spec: Mapping[str, Any], meta: Mapping[str, Any], status: Mapping[str, Any],
                       patch: Any, logger: Any, retry: int, memo: Any, nexusplants: PlantIndex | None = None,
                       **_: Any) -> None:
    """create, update, resume: apply the spec; a temporary failure is retried by kopf with backoff."""
    reconciler: Reconciler = memo.reconciler
    try:
        await reconciler.apply(spec=spec, meta=meta, status=status, patch=patch, logger=logger, plants=nexusplants)
    except TemporaryError as exc:
        raise kopf.TemporaryError(str(exc), delay=memo.settings.retry_delay(retry)) from exc


async def check_device(*, spec: Mapping[str, Any], meta: Mapping[str, Any], status: Mapping[str, Any],
                       patch: Any, logger: Any, memo: Any, nexusplants: PlantIndex | None = None,
                       **_: Any) -> None:
    """The drift timer: compare the device with the resource and re-apply; refresh gateway and health.
    A spec gateway_core found invalid stays as it is until it changes (no request every interval)."""
    degraded = c.condition(status, "Degraded")
    if (degraded.get("status") == "True" and degraded.get("reason") == c.INVALID
            and status.get("observedGeneration") == meta.get("generation")):
        return
    reconciler: Reconciler = memo.reconciler
    try:
        await reconciler.apply(spec=spec, meta=meta, status=status, patch=patch, logger=logger, plants=nexusplants)
    except TemporaryError as exc:
        raise kopf.TemporaryError(str(exc), delay=memo.settings.retry_delay(0)) from exc


async def remove_device(*, spec: Mapping[str, Any], meta: Mapping[str, Any], status: Mapping[str, Any],
                        logger: Any, retry: int, memo: Any, **_: Any) -> None:
    """The finalizer. While gateway_core cannot be reached, or refuses, the resource stays (retried)."""
    reconciler: Reconciler = memo.reconciler
    settings: Settings = memo.settings
    try:
        await reconciler.remove(spec=spec, meta=meta, status=status, logger=logger)
    except TemporaryError as exc:
        raise kopf.TemporaryError(str(exc), delay=settings.retry_delay(retry)) from exc
    except CoreRefused as exc:
        raise kopf.TemporaryError(f"{exc}; the finalizer {FINALIZER} stays until it succeeds (remove it by "
                                  "hand to leave the device in gateway_core)", delay=settings.retry_cap) from exc


def register(registry: kopf.OperatorRegistry, settings: Settings) -> None:
    """Every handler on ``registry``; the drift timer's interval from ``settings``."""

    async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
        configure(settings)
        try:
            await memo.reconciler.client.check()
        except TemporaryError as exc:  # no watching before gateway_core answers; retried soon, no traceback
            raise kopf.TemporaryError(str(exc), delay=memo.settings.retry_first) from exc
        except CoreRefused as exc:  # a wrong key or URL: said at start, retried slowly (a Secret may change)
            raise kopf.TemporaryError(str(exc), delay=memo.settings.retry_cap) from exc
        log.info("gateway_core at %s answers; watching NexusDevices", memo.settings.core.url)

    kopf.on.startup(registry=registry)(startup)
    # an explicit registry has none of kopf's default logins: the pod's ServiceAccount token, or a
    # kubeconfig when run from a workstation
    kopf.on.login(registry=registry)(login)
    kopf.on.cleanup(registry=registry)(_cleanup)
    kopf.index(GROUP, VERSION, PLANTS, id="nexusplants", registry=registry)(index_plant)
    for on in (kopf.on.create, kopf.on.update, kopf.on.resume):
        on(GROUP, VERSION, DEVICES, registry=registry)(apply_device)
    kopf.on.delete(GROUP, VERSION, DEVICES, registry=registry)(remove_device)
    kopf.timer(GROUP, VERSION, DEVICES, registry=registry, interval=settings.drift_interval,
               initial_delay=settings.drift_interval, idle=min(10.0, settings.drift_interval))(check_device)


def login(*, memo: Any, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """The pod's ServiceAccount token, else a kubeconfig; ``memo.logged_in`` for the ops /readyz."""
    info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    memo.logged_in = info is not None
    return info


async def _cleanup(memo: Any, **_: Any) -> None:
    await memo.reconciler.client.close()
