"""The deployment files stay in step with the code: the Kubernetes configuration
is a valid server configuration whose etcd settings and port URLs parse, and the
probes and ports of the manifests point at what the server serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from trellis.adapters.etcd.config import EtcdConfig, parse_etcd_url
from trellis.server.config import DEFAULT_LISTEN, load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in YAML(typ="safe").load_all((DEPLOY / "kubernetes" / name).read_text()) if doc]


def test_configmap_is_a_valid_distributed_server_configuration(tmp_path: Path) -> None:
    (configmap,) = _documents("configmap.yaml")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(configmap["data"]["config.yaml"])

    config = load_config(file=str(config_file), environ={})

    assert config.loader.startswith("etcd:") and config.store.startswith("etcd:")
    assert config.locker.startswith("etcd")
    base = EtcdConfig.from_mapping(config.etcd)
    assert len(base.endpoints) == 3
    for url in (config.store, config.locker):
        parsed, _ = parse_etcd_url(url, base)
        assert parsed.endpoints == base.endpoints and parsed.prefix == base.prefix


def test_deployment_probes_and_ports_match_the_server() -> None:
    deployment, service = _documents("trellis.yaml")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    dockerfile = (DEPLOY / "Dockerfile").read_text()

    # The image listens on every interface on the gRPC port the manifests use.
    assert f"TRELLIS_LISTEN=0.0.0.0:{ports['grpc']}" in dockerfile
    assert DEFAULT_LISTEN.startswith("127.0.0.1:")  # the CLI default stays loopback-only
    assert container["readinessProbe"]["grpc"]["port"] == ports["grpc"]
    assert service["spec"]["ports"][0]["targetPort"] == "grpc"
    # The config file mounted from the ConfigMap is the one the server is told to read.
    mount = container["volumeMounts"][0]["mountPath"]
    assert container["args"] == ["--config", f"{mount}/config.yaml"]
