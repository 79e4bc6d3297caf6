"""Driving the operator's handlers the way kopf does, without a Kubernetes API server: a resource body,
kopf's own Body/Patch objects, the keyword arguments kopf passes, and the patch merged back into the
body afterwards (kopf's JSON merge patch of the object and its status subresource)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from nexus_operator.client import CoreClient
from nexus_operator.reconcile import Reconciler
from nexus_operator.settings import CoreSettings, Settings

NAMESPACE = "plant-a"
INSTANCE = "nexus-operator"


def operator_memo(url: str, key: str | None, **settings: Any) -> kopf.Memo:
    s = Settings(namespaces=(NAMESPACE,), core=CoreSettings(url=url, api_key=key, timeout=3.0), **settings)
    client = CoreClient(s.core.url, s.core.api_key, timeout=s.core.timeout)
    return kopf.Memo(settings=s, reconciler=Reconciler(client, instance=s.instance))


def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """RFC 7386 JSON merge patch, as kopf sends it."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


@dataclass
class Resource:
    """One NexusDevice as the API server would hold it."""

    spec: dict[str, Any]
    name: str = "press-1"
    namespace: str = NAMESPACE
    annotations: dict[str, str] = field(default_factory=dict)
    generation: int = 1
    status: dict[str, Any] = field(default_factory=dict)
    patches: list[dict[str, Any]] = field(default_factory=list)

    def body(self) -> kopf.Body:
        raw: dict[str, Any] = {
            "apiVersion": "edge.nexus.io/v1alpha1", "kind": "NexusDevice",
            "metadata": {"name": self.name, "namespace": self.namespace, "generation": self.generation,
                         "uid": f"uid-{self.name}", "annotations": dict(self.annotations),
                         "finalizers": ["edge.nexus.io/nexus-operator"]},
            "spec": copy.deepcopy(self.spec), "status": copy.deepcopy(self.status),
        }
        return kopf.Body(cast("kopf.RawBody", raw))

    def change(self, mutate: Callable[[dict[str, Any]], None]) -> None:
        """A spec change: kopf sees a new generation."""
        mutate(self.spec)
        self.generation += 1

    async def call(self, handler: Callable[..., Any], memo: kopf.Memo, *, retry: int = 0,
                   plants: dict[Any, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
        """Call ``handler`` with kopf's keyword arguments; merge its patch; return the patch."""
        body = self.body()
        patch = kopf.Patch()
        kwargs: dict[str, Any] = {
            "body": body, "spec": body.spec, "meta": body.meta, "status": body.status, "patch": patch,
            "name": self.name, "namespace": self.namespace, "uid": body.meta.uid, "labels": body.meta.labels,
            "annotations": body.meta.annotations, "logger": logging.getLogger("kopf.objects"), "retry": retry,
            "started": None, "runtime": None, "memo": memo, "param": None, "reason": "test",
            "diff": (), "old": None, "new": None, "resource": None, "nexusplants": plants or {},
        }
        try:
            await handler(**kwargs)
        finally:  # kopf applies what was patched also when the handler fails
            done = dict(patch)
            merge(self.status, done.get("status", {}))
            self.patches.append(done)
        return done

    def condition(self, kind: str) -> dict[str, Any]:
        return next(c for c in self.status["conditions"] if c["type"] == kind)
