"""Keep this media pod's `controller.kubernetes.io/pod-deletion-cost` equal to its load, and
`cluster-autoscaler.kubernetes.io/safe-to-evict: "false"` on it while it holds participants.

When the HorizontalPodAutoscaler scales media down, the ReplicaSet controller deletes
the pods with the lowest deletion cost first; a pod that keeps the annotation equal to
its current load (participants) makes a scale-down remove empty pods before busy ones.
The cluster autoscaler does not remove a node to save cost while a pod on it says it is not safe
to evict: the mark is set while anyone is connected here and removed (merge patch null) once no
one is, so empty media pods never hold a node. Node drains and upgrades are not blocked by it;
they wait for the PodDisruptionBudget and the termination grace (the drain keeps rooms until
their meetings end).

Production client for the Kubernetes API: the official `kubernetes` client with the
in-cluster configuration (service-account token, cluster CA, KUBERNETES_SERVICE_HOST).
It sends one JSON merge patch that touches only those two annotations of this pod, and
only when the value changed. The pod name comes from the downward API (SVPL_POD_NAME);
the chart's Role allows get/patch on pods (Kubernetes RBAC cannot name a pod that does
not exist yet, so the "own pod only" rule is enforced here and, optionally, by the
chart's ValidatingAdmissionPolicy).

The media server wires it in when SVPL_POD_NAME is set: `updater = from_environment(load)`
then `asyncio.create_task(updater.run())`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from kubernetes import client
from kubernetes.config.incluster_config import InClusterConfigLoader

log = logging.getLogger("svpl.media.pod_deletion_cost")

ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"
MERGE_PATCH = "application/merge-patch+json"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# The annotation is an int32 (kube-controller-manager ignores values outside it).
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


class PodDeletionCost:
    """Patches one pod's deletion-cost annotation to `load()` (and its safe-to-evict mark to "false"
    while the load is above 0, removed at 0) whenever the value changes."""

    def __init__(
        self,
        api: client.CoreV1Api,
        pod_name: str,
        namespace: str,
        load: Callable[[], int],
        interval_seconds: float = 10.0,
    ) -> None:
        if not pod_name or not namespace:
            raise ValueError("pod name and namespace are required")
        self._api = api
        self.pod_name = pod_name
        self.namespace = namespace
        self._load = load
        self.interval_seconds = interval_seconds
        self.published: int | None = None

    @staticmethod
    def body(cost: int) -> dict:
        return {"metadata": {"annotations": {ANNOTATION: str(cost), SAFE_TO_EVICT: "false" if cost > 0 else None}}}

    def update(self) -> bool:
        """Publish the current load if it differs from the last published value (blocking)."""
        cost = max(INT32_MIN, min(INT32_MAX, int(self._load())))
        if cost == self.published:
            return False
        self._api.patch_namespaced_pod(
            self.pod_name, self.namespace, self.body(cost), _content_type=MERGE_PATCH
        )
        self.published = cost
        return True

    async def run(self) -> None:
        """Update every interval until cancelled; an API error is logged and retried next round."""
        while True:
            try:
                await asyncio.to_thread(self.update)
            except Exception as exc:  # noqa: BLE001 - the API being away must not stop media
                log.warning("pod-deletion-cost update failed: %s", exc.__class__.__name__)
            await asyncio.sleep(self.interval_seconds)


def from_environment(
    load: Callable[[], int],
    service_account_dir: str = SERVICE_ACCOUNT_DIR,
    interval_seconds: float = 10.0,
) -> PodDeletionCost | None:
    """The updater for this pod when running in Kubernetes (SVPL_POD_NAME set), else None.

    Uses the in-cluster configuration: KUBERNETES_SERVICE_HOST/PORT and the mounted
    service-account token and CA. The namespace is SVPL_POD_NAMESPACE or the mounted one.
    """
    pod_name = os.environ.get("SVPL_POD_NAME", "")
    if not pod_name:
        return None
    namespace = os.environ.get("SVPL_POD_NAMESPACE", "")
    if not namespace:
        with open(os.path.join(service_account_dir, "namespace"), encoding="utf-8") as f:
            namespace = f.read().strip()
    configuration = client.Configuration()
    # `config.load_incluster_config` with the token and CA paths made explicit (tests point
    # them at their own files); the token is re-read as the kubelet rotates it.
    InClusterConfigLoader(
        token_filename=os.path.join(service_account_dir, "token"),
        cert_filename=os.path.join(service_account_dir, "ca.crt"),
        try_refresh_token=True,
    ).load_and_set(configuration)
    api = client.CoreV1Api(client.ApiClient(configuration))
    return PodDeletionCost(api, pod_name, namespace, load, interval_seconds)
