"""The rendered manifests are valid Kubernetes objects (kubernetes-validate, strict, at
a pinned version) and keep the promises deploy/README.md makes about them: probes on
the service names the server reports, native sidecars, hardened containers, a
configuration the server accepts. (test_local_pod.py runs them.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.rendering import (
    DEPLOY,
    KUBERNETES_VERSION,
    OVERLAYS,
    RENDERED,
    containers,
    find,
    pod_specs,
    render,
)
from tests.support.requirements import missing
from trellis.adapters.etcd.config import EtcdConfig
from trellis.server.app import SERVICE_DEPENDENCIES
from trellis.server.config import load_config


@pytest.fixture(scope="module")
def kubernetes_validate() -> Any:
    try:
        import kubernetes_validate  # type: ignore[import-untyped]
    except ImportError:
        missing("kubernetes-validate is not installed (the dev extra brings it)")
    return kubernetes_validate


@pytest.mark.parametrize("kustomization", RENDERED)
def test_every_rendered_object_validates_strictly(kustomization: str, kubernetes_validate: Any) -> None:
    docs = render(kustomization)
    assert docs
    failures = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            failures.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not failures, "\n".join(failures)


def test_an_unknown_field_fails_the_strict_validation(kubernetes_validate: Any) -> None:
    """The check above can fail: strict mode rejects a misspelt field."""
    deployment = find(render("overlays/dev"), "Deployment", "trellis")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("kustomization", RENDERED)
def test_every_container_is_hardened_and_bounded(kustomization: str) -> None:
    for where, pod in pod_specs(render(kustomization)):
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert pod.get("automountServiceAccountToken") is False, where
        for container in containers(pod):
            what = f"{where} container {container['name']}"
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, what
            assert security["readOnlyRootFilesystem"] is True, what
            assert security["capabilities"] == {"drop": ["ALL"]}, what
            assert security["seccompProfile"] == {"type": "RuntimeDefault"}, what
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), what
            assert "memory" in container["resources"]["limits"], what
            image = container["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), what
            assert container["imagePullPolicy"] == "IfNotPresent", what


@pytest.mark.parametrize("kustomization", OVERLAYS)
def test_the_server_pod_probes_mean_what_they_say(kustomization: str) -> None:
    pod = find(render(kustomization), "Deployment", "trellis")["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    # Readiness asks for a service the server reports, one that needs etcd (store, locker).
    service = server["readinessProbe"]["grpc"]["service"]
    assert service in SERVICE_DEPENDENCIES, f"the server reports no health for {service!r}"
    assert {"store", "locker", "loader"} <= set(SERVICE_DEPENDENCIES[service])
    # Liveness asks for the empty name, which no backend outage turns NOT_SERVING.
    assert server["livenessProbe"]["grpc"]["service"] == ""
    assert "startupProbe" in server
    # The dispatcher sidecar is a native sidecar with a startup probe, on the shared socket.
    (tools,) = [c for c in pod["initContainers"] if c["name"] == "tools"]
    assert tools["restartPolicy"] == "Always" and "startupProbe" in tools
    socket_dir = {m["name"] for m in tools["volumeMounts"] if m["mountPath"] == "/run/trellis"}
    assert socket_dir == {m["name"] for m in server["volumeMounts"] if m["mountPath"] == "/run/trellis"}
    (volume,) = [v for v in pod["volumes"] if v["name"] in socket_dir]
    assert "emptyDir" in volume
    assert "ports" not in tools, "the sidecar is reached over its socket only"


@pytest.mark.parametrize("kustomization", OVERLAYS)
def test_the_grace_period_covers_the_drain(kustomization: str, tmp_path: Path) -> None:
    docs = render(kustomization)
    pod = find(docs, "Deployment", "trellis")["spec"]["template"]["spec"]
    config = _server_config(docs, tmp_path)
    pause = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pause + config.shutdown_grace


@pytest.mark.parametrize("kustomization", OVERLAYS)
def test_the_configmap_is_a_server_configuration_on_the_bundled_etcd(
    kustomization: str, tmp_path: Path
) -> None:
    docs = render(kustomization)
    config = _server_config(docs, tmp_path)
    etcd = EtcdConfig.from_mapping(config.etcd)
    members = find(docs, "StatefulSet", "etcd")["spec"]["replicas"]
    assert etcd.endpoints == tuple(f"etcd-{i}.etcd:2379" for i in range(members))
    assert config.loader.startswith("etcd:") and config.store.startswith("etcd:")
    # The publishing Job writes the graph the servers load, under their prefix.
    job = find(docs, "Job", "trellis-publish-graph")["spec"]["template"]["spec"]["containers"][0]
    args = job["args"]
    assert args[:2] == ["graph", "push"]
    assert config.loader == f"etcd:{args[args.index('--graph') + 1]}"
    assert args[args.index("--prefix") + 1] == etcd.prefix
    assert args[args.index("--etcd") + 1].split(",") == list(etcd.endpoints)
    assert etcd.use_tls == (kustomization == "overlays/production")


def test_production_runs_three_replicas_on_distinct_nodes() -> None:
    deployment = find(render("overlays/production"), "Deployment", "trellis")
    assert deployment["spec"]["replicas"] == 3
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {"topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"}.items() <= spread[
        0
    ].items()


@pytest.mark.parametrize("kustomization", OVERLAYS)
def test_the_service_speaks_grpc_to_the_server_port(kustomization: str) -> None:
    docs = render(kustomization)
    (port,) = find(docs, "Service", "trellis")["spec"]["ports"]
    assert port["appProtocol"] == "grpc"
    server = find(docs, "Deployment", "trellis")["spec"]["template"]["spec"]["containers"][0]
    named = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert named[port["targetPort"]] == server["readinessProbe"]["grpc"]["port"]


@pytest.mark.parametrize("kustomization", OVERLAYS)
def test_etcd_is_bounded_compacted_and_backed_up(kustomization: str) -> None:
    docs = render(kustomization)
    etcd = find(docs, "StatefulSet", "etcd")
    pod = etcd["spec"]["template"]["spec"]
    (member,) = pod["containers"]
    flags = dict(arg.split("=", 1) for arg in member["args"] if "=" in arg)
    assert int(flags["--quota-backend-bytes"]) > 0
    assert flags["--auto-compaction-retention"]
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]
    assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(member)
    assert etcd["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    peers = flags["--initial-cluster"].split(",")
    assert len(peers) == etcd["spec"]["replicas"] == 3
    defrag = find(docs, "CronJob", "etcd-defrag")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert defrag["containers"][0]["args"][:2] == ["defrag", "--cluster"]
    snapshot = find(docs, "CronJob", "etcd-snapshot")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert snapshot["initContainers"][0]["args"][:2] == ["snapshot", "save"]


def test_only_etcd_clients_reach_etcd() -> None:
    docs = render("overlays/dev")
    policy = find(docs, "NetworkPolicy", "etcd")["spec"]
    client_rule = next(r for r in policy["ingress"] if {"port": 2379, "protocol": "TCP"} in r["ports"])
    label = client_rule["from"][0]["podSelector"]["matchLabels"]
    # Exactly the pods that talk to etcd carry the label.
    talking = {
        "Deployment/trellis",
        "Job/trellis-publish-graph",
        "CronJob/etcd-defrag",
        "CronJob/etcd-snapshot",
    }
    labelled = set()
    for doc in docs:
        spec = doc.get("spec", {})
        template = spec.get("jobTemplate", {}).get("spec", spec).get("template")
        if template and label.items() <= template["metadata"].get("labels", {}).items():
            labelled.add(f"{doc['kind']}/{doc['metadata']['name']}")
    assert labelled == talking
    trellis = find(docs, "NetworkPolicy", "trellis")["spec"]
    admitted = {port["port"] for rule in trellis["ingress"] for port in rule["ports"]}
    server = find(docs, "Deployment", "trellis")["spec"]["template"]["spec"]["containers"][0]
    assert admitted == {p["containerPort"] for p in server["ports"]}


def test_the_git_flow_variant_serves_the_flow_from_the_loader_sidecar() -> None:
    docs = render("examples/git-flow")
    pod = find(docs, "Deployment", "trellis")["spec"]["template"]["spec"]
    names = [c["name"] for c in pod["initContainers"]]
    assert names.index("git-sync") < names.index("loader"), "the checkout exists before it is served"
    loader = pod["initContainers"][names.index("loader")]
    assert loader["restartPolicy"] == "Always" and loader["args"][0] == "loader"
    socket = loader["args"][loader["args"].index("--listen") + 1]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["TRELLIS_LOADER"] == socket
    assert not [d for d in docs if d["kind"] == "Job"], "no publishing Job when git holds the flow"


def test_the_existing_etcd_variant_has_no_bundled_etcd(tmp_path: Path) -> None:
    docs = render("examples/existing-etcd")
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert not {k for k in kinds if "etcd" in k[1] and k[0] != "NetworkPolicy"}, kinds
    config = _server_config(docs, tmp_path)
    job = find(docs, "Job", "trellis-publish-graph")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert job[job.index("--etcd") + 1].split(",") == list(EtcdConfig.from_mapping(config.etcd).endpoints)


def test_every_referenced_secret_has_a_documented_command(tmp_path: Path) -> None:
    readme = (DEPLOY / "README.md").read_text()
    documented = set(re.findall(r"kubectl (?:-n \S+ )?create secret \S+ (\S+)", readme))
    for kustomization in OVERLAYS:
        referenced = set()
        for _where, pod in pod_specs(render(kustomization)):
            referenced |= {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
        assert referenced <= documented, f"{kustomization}: no command creates {referenced - documented}"


def test_the_readme_applies_kustomizations_that_render() -> None:
    readme = (DEPLOY / "README.md").read_text()
    applied = re.findall(r"kubectl apply -k deploy/kubernetes/(\S+)", readme)
    assert set(applied) == set(RENDERED)
    for kustomization in applied:
        assert render(kustomization)
    for script in re.findall(r"(scripts/[\w-]+)", readme):
        assert (DEPLOY.parent / script).is_file(), script


def _server_config(docs: list[dict[str, Any]], tmp_path: Path) -> Any:
    configmap = find(docs, "ConfigMap", "trellis-config")
    path = tmp_path / "config.yaml"
    path.write_text(configmap["data"]["config.yaml"])
    return load_config(file=str(path), environ={})
