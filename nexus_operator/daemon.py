"""The operator process: kopf's operator coroutine and the ops endpoint, in one event loop.

kopf installs the SIGTERM/SIGINT handlers itself (it stops watching, lets running handlers finish and
runs the cleanup handlers); the ops endpoint closes after it.
"""

from __future__ import annotations

import asyncio
import logging

import kopf

from nexus.ops import OpsServer
from nexus_operator.client import CoreClient
from nexus_operator.handlers import register
from nexus_operator.reconcile import Reconciler
from nexus_operator.settings import Settings

log = logging.getLogger("nexus_operator")


async def run(settings: Settings) -> int:
    registry = kopf.OperatorRegistry()
    register(registry, settings)
    client = CoreClient(settings.core.url, settings.core.api_key, timeout=settings.core.timeout)
    memo = kopf.Memo(settings=settings, reconciler=Reconciler(client, instance=settings.instance), logged_in=False)
    ready = asyncio.Event()  # kopf sets it after the startup handler (gateway_core answered)
    ops = OpsServer(settings.ops, checks={"kopf": ready.is_set, "kube": lambda: bool(memo.logged_in),
                                          "core": lambda: client.reachable})
    await ops.start()
    scope = "every namespace" if settings.clusterwide else ", ".join(settings.namespaces)
    log.info("nexus-operator %s watching %s, gateway_core %s", settings.instance, scope, settings.core.url)
    try:
        await kopf.operator(registry=registry, memo=memo, standalone=True, clusterwide=settings.clusterwide,
                            namespaces=settings.namespaces, ready_flag=ready)
    except kopf.LoginError as exc:  # no token mounted, no kubeconfig: nothing to watch with
        log.error("no Kubernetes credentials (a ServiceAccount token or a kubeconfig): %s", str(exc)[:300])
        return 1
    finally:
        await client.close()
        await ops.close()
    return 0
