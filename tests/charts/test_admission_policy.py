"""The chart's ValidatingAdmissionPolicy (media.admissionPolicy.enabled): its CEL, evaluated
with cel-python against the admission requests the API server would hand it, lets a media pod
change only its own pod-deletion-cost and safe-to-evict annotations."""

from __future__ import annotations

import copy

import celpy
import pytest

from tests.charts.conftest import NAMESPACE, RELEASE

MEDIA_SA = f"system:serviceaccount:{NAMESPACE}:{RELEASE}-svpl-media"
POD = f"{RELEASE}-svpl-media-6c9d8-x2kqp"
COST = "controller.kubernetes.io/pod-deletion-cost"
EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"
ONLY_OWN = ("media may change only the controller.kubernetes.io/pod-deletion-cost and"
            " cluster-autoscaler.kubernetes.io/safe-to-evict annotations")


@pytest.fixture(scope="module")
def policy(render):
    (vap,) = render({"media": {"admissionPolicy": {"enabled": True}}}).of_kind("ValidatingAdmissionPolicy")
    (binding,) = render({"media": {"admissionPolicy": {"enabled": True}}}).of_kind("ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == vap["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    env = celpy.Environment()

    def compile_(expression):
        return env.program(env.compile(expression))

    return {
        "spec": vap["spec"],
        "match": [compile_(c["expression"]) for c in vap["spec"]["matchConditions"]],
        "validations": [(compile_(v["expression"]), v["message"]) for v in vap["spec"]["validations"]],
    }


def pod(annotations=None, labels=None):
    return {"metadata": {"name": POD, "namespace": NAMESPACE,
                         "labels": labels or {"app.kubernetes.io/name": "svpl-media"},
                         "annotations": annotations or {"checksum/config": "abc", COST: "3"}},
            "spec": {"containers": [{"name": "media", "image": "svpl-media:0.1.0"}]}}


def decide(policy, old, new, username=MEDIA_SA, token_pod=POD, name=POD):
    """None when the policy does not apply, else the messages of the failed validations."""
    extra = {"authentication.kubernetes.io/pod-name": [token_pod]} if token_pod else {}
    activation = {
        "request": celpy.json_to_cel({"name": name, "namespace": NAMESPACE, "operation": "UPDATE",
                                      "userInfo": {"username": username, "extra": extra}}),
        "object": celpy.json_to_cel(new),
        "oldObject": celpy.json_to_cel(old),
    }
    if not all(bool(p.evaluate(activation)) for p in policy["match"]):
        return None
    return [message for program, message in policy["validations"] if not bool(program.evaluate(activation))]


def test_policy_applies_to_pod_updates_only(policy):
    rules = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rules == [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["pods"]}]
    assert policy["spec"]["failurePolicy"] == "Fail"


def test_media_may_set_its_own_deletion_cost(policy):
    old = pod()
    new = copy.deepcopy(old)
    new["metadata"]["annotations"][COST] = "0"
    assert decide(policy, old, new) == []
    first = pod(annotations={"checksum/config": "abc"})  # the very first patch adds the annotation
    assert decide(policy, first, old) == []


def test_media_may_mark_itself_not_safe_to_evict_and_remove_the_mark(policy):
    empty = pod()
    busy = pod(annotations={"checksum/config": "abc", COST: "3", EVICT: "false"})
    assert decide(policy, empty, busy) == []
    assert decide(policy, busy, empty) == []


def test_media_may_not_patch_another_pod(policy):
    old, new = pod(), pod(annotations={"checksum/config": "abc", COST: "9"})
    assert decide(policy, old, new, name=f"{RELEASE}-svpl-media-6c9d8-other") == ["media may patch only its own pod"]
    assert decide(policy, old, new, token_pod=None) == ["media may patch only its own pod"]


@pytest.mark.parametrize("change", ["label", "other annotation", "removed annotation", "spec"])
def test_media_may_change_nothing_but_the_deletion_cost(policy, change):
    old = pod()
    new = copy.deepcopy(old)
    if change == "label":
        new["metadata"]["labels"]["app.kubernetes.io/name"] = "svpl-gateway"
    elif change == "other annotation":
        new["metadata"]["annotations"]["svpl.io/anything"] = "1"
    elif change == "removed annotation":
        del new["metadata"]["annotations"]["checksum/config"]
    else:
        new["spec"]["containers"][0]["image"] = "evil:latest"
    assert decide(policy, old, new) == [ONLY_OWN]


def test_other_callers_are_not_this_policys_business(policy):
    old, new = pod(), pod(labels={"x": "y"})
    assert decide(policy, old, new, username="system:serviceaccount:kube-system:replicaset-controller") is None
