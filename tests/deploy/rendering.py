"""The kustomize overlays of deploy/kubernetes rendered with ``kubectl kustomize`` (no
cluster needed), and lookups in what they render."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from tests.support.requirements import missing

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
OVERLAYS = ("overlays/dev", "overlays/production")
# Every kustomization a user may apply: the two overlays and the documented variants.
RENDERED = (*OVERLAYS, "examples/existing-etcd", "examples/git-flow")
# The Kubernetes version the manifests are validated against (native sidecars are GA
# from 1.33 on).
KUBERNETES_VERSION = "1.33.0"


def kubectl() -> str:
    """The kubectl binary (scripts/bootstrap installs Debian's kubectl); skipped when
    missing, except under CI=true where a missing tool is a failure."""
    found = shutil.which("kubectl")
    if found is None:
        missing("kubectl is not installed (scripts/bootstrap installs it)")
    return found


@cache
def _render(kustomization: str) -> str:
    done = subprocess.run(
        [kubectl(), "kustomize", str(KUBERNETES / kustomization)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"kubectl kustomize {kustomization} failed:\n{done.stderr}"
    return done.stdout


def render(kustomization: str) -> list[dict[str, Any]]:
    """The documents ``kubectl kustomize`` renders for ``kustomization`` (fresh copies)."""
    return [doc for doc in YAML(typ="safe").load_all(_render(kustomization)) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one document of ``kind`` whose name is ``name`` (or, for a ConfigMap, whose
    generated name is ``name`` plus the content-hash suffix)."""
    found = [
        doc
        for doc in docs
        if doc["kind"] == kind
        and (doc["metadata"]["name"] == name or generated_from(doc["metadata"]["name"], name))
    ]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def generated_from(actual: str, name: str) -> bool:
    """A configMapGenerator's name: NAME-<10 character hash>."""
    return actual.startswith(name + "-") and len(actual) == len(name) + 11


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """("Kind/name", pod spec) of every workload: Deployments, StatefulSets, Jobs, CronJobs."""
    for doc in docs:
        spec = doc.get("spec", {})
        if doc["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        if "template" in spec:
            yield f"{doc['kind']}/{doc['metadata']['name']}", spec["template"]["spec"]


def containers(pod: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod.get("initContainers", [])
    yield from pod["containers"]
