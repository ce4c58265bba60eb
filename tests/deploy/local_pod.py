"""A rendered pod spec run as local processes on loopback, the way a kubelet would run
it, so a test proves that the manifests' commands, arguments, environment, volumes,
ports and probes work with the real programs.

What stands in for the cluster:

* volumes are directories under one short temporary directory (a Unix socket path
  must stay under ~100 bytes): a ConfigMap or Secret volume holds its keys as files,
  an emptyDir is empty; every path the containers name under a mount is rewritten
  to the directory;
* the pod's network is loopback: each declared container port gets a free local
  port, ``0.0.0.0:PORT`` becomes ``127.0.0.1:LOCAL``, and cluster names
  (``etcd-0.etcd:2379``) become the addresses of the local servers standing in;
* an image's command is the same program from this checkout (``trellis`` ->
  ``python -m trellis.cli.main``, ``python3`` -> this Python).

The kubelet's part: native sidecars (init containers with ``restartPolicy: Always``)
start in order, each after its startup probe passes, then the containers; probes are
run as declared (gRPC health with the declared service, TCP connect, HTTP GET, exec);
termination runs the preStop hook, sends SIGTERM, waits up to the grace period (then
SIGKILL), and stops the sidecars only after the containers have exited.
Only processes started here are signalled, always by their PID.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.etcd_process import free_port
from tests.support.waiting import eventually

PROBE_POLL = 0.2
START_BOUND = 90.0
JOB_BOUND = 120.0
PROGRAMS = {
    "trellis": [sys.executable, "-m", "trellis.cli.main"],
    "python3": [sys.executable],
    "etcd": [os.environ.get("ETCD_BIN") or "etcd"],
}
_VAR = re.compile(r"\$\((\w+)\)")


class PodFailed(AssertionError):
    """A container exited or a probe never passed (the message has the logs)."""


@dataclass
class Container:
    spec: dict[str, Any]
    argv: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, sig)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return f"--- {self.name} ---\n" + "\n".join(text.splitlines()[-lines:])


class LocalPod:
    def __init__(
        self,
        name: str,
        spec: dict[str, Any],
        documents: list[dict[str, Any]],
        *,
        secrets: Mapping[str, Mapping[str, bytes]],
        hosts: Mapping[str, str],
        ports: Mapping[int, int] | None = None,
        claims: Sequence[str] = (),
        stand_ins: Mapping[str, Callable[[LocalPod], None]] | None = None,
    ) -> None:
        """``ports``: local ports chosen beforehand (others get free ones); ``claims``:
        the volumes of a StatefulSet's volumeClaimTemplates (empty directories here);
        ``stand_ins``: containers whose image has no local program, replaced by what
        they would have done to the pod (called instead of starting them)."""
        self.name = name
        self.spec = spec
        self.stand_ins = dict(stand_ins or {})
        # Short: a Unix socket in an emptyDir must fit in ~100 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="tk-", dir="/tmp"))
        self.ports = {
            int(port["containerPort"]): free_port()
            for container in self._all_specs()
            for port in container.get("ports", [])
        }
        self.ports.update(ports or {})
        self.hosts = dict(hosts)
        names = [volume["name"] for volume in spec.get("volumes", [])] + list(claims)
        self.volumes = {name: self.root / "v" / name for name in names}
        for claim in claims:
            self.volumes[claim].mkdir(parents=True)
        # Files in volumes (config.yaml) name paths as the containers mounting them see
        # them; every container here mounts a volume at the same path.
        self.mounts = {
            m["mountPath"]: m["name"] for c in self._all_specs() for m in c.get("volumeMounts", [])
        }
        for volume in spec.get("volumes", []):
            self._fill(volume, documents, secrets)
        self.specs = {c["name"]: c for c in self._all_specs()}
        self.containers = {
            c["name"]: self._container(c) for c in self._all_specs() if c["name"] not in self.stand_ins
        }

    # --- translation: the cluster's names, ports and paths as this machine's -------------

    def _all_specs(self) -> list[dict[str, Any]]:
        return [*self.spec.get("initContainers", []), *self.spec["containers"]]

    def _network(self, text: str) -> str:
        for name, address in self.hosts.items():
            text = text.replace(name, address)
        for port, local in self.ports.items():
            text = text.replace(f"0.0.0.0:{port}", f"127.0.0.1:{local}")
        return text

    def _paths(self, mounts: Mapping[str, str], text: str) -> str:
        """Every path under a mount point, rewritten in one pass (a rewritten path is not
        rewritten again: the temporary directory itself is under /tmp, a mount point)."""
        if not mounts:
            return text
        alternatives = "|".join(re.escape(path) for path in sorted(mounts, key=len, reverse=True))
        pattern = re.compile(rf"(?<![\w.-])({alternatives})(?=/|$|[^\w.-])", re.M)
        return pattern.sub(lambda m: str(self.volumes[mounts[m[1]]]), text)

    def translate(self, container: dict[str, Any], text: str) -> str:
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        return self._paths(mounts, self._network(text))

    def local_port(self, container: dict[str, Any], port: int | str) -> int:
        if isinstance(port, str):
            (port,) = [p["containerPort"] for p in container.get("ports", []) if p["name"] == port]
        return self.ports[int(port)]

    def service_port(self, service: dict[str, Any], name: str) -> int:
        """The local port a Service port reaches (its targetPort, by name or number)."""
        (port,) = [p for p in service["spec"]["ports"] if p["name"] == name]
        target = port.get("targetPort", port["port"])
        for container in self.spec["containers"]:
            for declared in container.get("ports", []):
                if target in (declared["name"], declared["containerPort"]):
                    return self.ports[int(declared["containerPort"])]
        raise PodFailed(f"no container port of {self.name} is the Service's target {target!r}")

    # --- volumes and containers ----------------------------------------------------------

    def _fill(
        self,
        volume: dict[str, Any],
        documents: list[dict[str, Any]],
        secrets: Mapping[str, Mapping[str, bytes]],
    ) -> None:
        where = self.volumes[volume["name"]]
        where.mkdir(parents=True)
        if "configMap" in volume:
            name = volume["configMap"]["name"]
            (configmap,) = [
                d for d in documents if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name
            ]
            for key, text in configmap["data"].items():
                # Files that name the cluster's hosts, ports or paths see this machine's.
                (where / key).write_text(self._paths(self.mounts, self._network(text)))
        elif "secret" in volume:
            data = secrets.get(volume["secret"]["secretName"])
            if data is None:
                raise PodFailed(f"the test gives no Secret {volume['secret']['secretName']!r}")
            for key, value in data.items():
                (where / key).write_bytes(value)
                (where / key).chmod(0o440)
        elif not ({"emptyDir", "persistentVolumeClaim"} & set(volume)):
            raise PodFailed(f"volume {volume['name']}: this kind of volume is not run locally")

    def _container(self, spec: dict[str, Any]) -> Container:
        env: dict[str, str] = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        for variable in spec.get("env", []):
            if "value" in variable:
                env[variable["name"]] = self.translate(
                    spec, _VAR.sub(lambda m: env.get(m[1], m[0]), variable["value"])
                )
            elif variable["valueFrom"].get("fieldRef", {}).get("fieldPath") == "metadata.name":
                env[variable["name"]] = self.name
            else:
                raise PodFailed(f"{spec['name']}: env {variable['name']} is not run locally")
        declared = [*spec.get("command", []), *spec.get("args", [])]
        if not declared or declared[0] not in PROGRAMS:
            raise PodFailed(f"{spec['name']}: no local stand-in for the image's command {declared[:1]}")
        argv = [*PROGRAMS[declared[0]], *(self._expand(spec, env, arg) for arg in declared[1:])]
        return Container(spec, argv, env, self.root / f"{spec['name']}.log")

    def _expand(self, spec: dict[str, Any], env: Mapping[str, str], arg: str) -> str:
        # The kubelet expands $(VAR) from the container's environment.
        return self.translate(spec, _VAR.sub(lambda m: env.get(m[1], m[0]), arg))

    def _start(self, container: Container) -> None:
        work = self.root / "work" / container.name
        work.mkdir(parents=True, exist_ok=True)
        with container.log.open("ab") as log:
            container.process = subprocess.Popen(
                container.argv,
                cwd=work,
                env=container.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def logs(self) -> str:
        return "\n".join(c.log_tail() for c in self.containers.values())

    # --- probes --------------------------------------------------------------------------

    async def probe(self, container_name: str, kind: str) -> bool:
        """One run of the container's ``kind`` probe (startupProbe, readinessProbe,
        livenessProbe), as the kubelet runs it: True when it succeeds."""
        spec = self.specs[container_name]
        probe = spec[kind]
        timeout = float(probe.get("timeoutSeconds", 1))
        if "grpc" in probe:
            port = self.local_port(spec, probe["grpc"]["port"])
            request = health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", ""))
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                try:
                    reply = await health_pb2_grpc.HealthStub(channel).Check(request, timeout=timeout)
                except grpc.aio.AioRpcError:
                    return False
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
        if "tcpSocket" in probe:
            port = self.local_port(spec, probe["tcpSocket"]["port"])
            return await asyncio.to_thread(_connects, port, timeout)
        if "httpGet" in probe:
            port = self.local_port(spec, probe["httpGet"]["port"])
            url = f"http://127.0.0.1:{port}{probe['httpGet'].get('path', '/')}"
            return await asyncio.to_thread(_http_ok, url, timeout)
        if "exec" in probe:
            command = probe["exec"]["command"]
            argv = [*PROGRAMS.get(command[0], [command[0]]), *(self.translate(spec, a) for a in command[1:])]
            process = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
            )
            try:
                async with asyncio.timeout(timeout):
                    return await process.wait() == 0
            except TimeoutError:
                process.kill()
                await process.wait()
                return False
        raise PodFailed(f"{container_name} {kind}: unknown probe {sorted(probe)}")

    async def wait_probe(
        self, container_name: str, kind: str, passing: bool = True, within: float = 60.0
    ) -> None:
        """Until the probe passes (or, with passing=False, fails); bounded."""
        container = self.containers.get(container_name)

        async def check() -> bool:
            if container is not None and not container.running():
                code = container.process.returncode if container.process else None
                raise PodFailed(f"{container_name} exited ({code}):\n{self.logs()}")
            return await self.probe(container_name, kind) is passing

        try:
            await eventually(
                check, f"{container_name} {kind} {'passes' if passing else 'fails'}", within, PROBE_POLL
            )
        except AssertionError as exc:
            raise PodFailed(f"{exc}\n{self.logs()}") from None

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Native sidecars in order, each once its startup probe passes; other init
        containers to completion; then every container, until their startup probes pass."""
        for spec in self.spec.get("initContainers", []):
            if spec["name"] in self.stand_ins:
                self.stand_ins[spec["name"]](self)
                if "startupProbe" in spec:
                    await self.wait_probe(spec["name"], "startupProbe", within=START_BOUND)
                continue
            container = self.containers[spec["name"]]
            self._start(container)
            if spec.get("restartPolicy") == "Always":
                if "startupProbe" in spec:
                    await self.wait_probe(container.name, "startupProbe", within=START_BOUND)
            else:
                await self._completes(container)
        for spec in self.spec["containers"]:
            self._start(self.containers[spec["name"]])
        for spec in self.spec["containers"]:
            if "startupProbe" in spec:
                await self.wait_probe(spec["name"], "startupProbe", within=START_BOUND)

    async def run_to_completion(self) -> None:
        """A Job's pod: its init containers, then its containers, each must exit 0."""
        for spec in [*self.spec.get("initContainers", []), *self.spec["containers"]]:
            container = self.containers[spec["name"]]
            self._start(container)
            await self._completes(container)

    async def _completes(self, container: Container) -> None:
        assert container.process is not None
        try:
            code = await asyncio.wait_for(asyncio.to_thread(container.process.wait), JOB_BOUND)
        except TimeoutError:
            container.signal(signal.SIGKILL)
            raise PodFailed(
                f"{container.name} did not finish within {JOB_BOUND:g} s:\n{self.logs()}"
            ) from None
        if code != 0:
            raise PodFailed(f"{container.name} exited {code}:\n{self.logs()}")

    async def begin_termination(self) -> float:
        """What the kubelet does first when the pod is deleted: each container's preStop
        hook, then SIGTERM. Returns the monotonic deadline of the grace period."""
        deadline = time.monotonic() + float(self.spec.get("terminationGracePeriodSeconds", 30))
        for spec in self.spec["containers"]:
            pre_stop = spec.get("lifecycle", {}).get("preStop")
            if pre_stop is not None:
                if "sleep" not in pre_stop:
                    raise PodFailed(f"{spec['name']}: this preStop hook is not run locally")
                await asyncio.sleep(float(pre_stop["sleep"]["seconds"]))
        for spec in self.spec["containers"]:
            self.containers[spec["name"]].signal(signal.SIGTERM)
        return deadline

    async def finish_termination(self, deadline: float) -> dict[str, int]:
        """Wait for the containers until the deadline (then SIGKILL), then stop the native
        sidecars in reverse order the same way. Exit codes by container; -9 = killed."""
        codes = {}
        for spec in self.spec["containers"]:
            codes[spec["name"]] = await self._exit(self.containers[spec["name"]], deadline)
        # Sidecars get at least the kubelet's 2 seconds even when the grace is spent.
        for spec in reversed(self.spec.get("initContainers", [])):
            container = self.containers.get(spec["name"])
            if container is not None and spec.get("restartPolicy") == "Always":
                container.signal(signal.SIGTERM)
                codes[spec["name"]] = await self._exit(container, max(deadline, time.monotonic() + 2.0))
        return codes

    async def _exit(self, container: Container, deadline: float) -> int:
        if container.process is None:
            return 0
        process = container.process
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(process.wait), max(0.0, deadline - time.monotonic())
            )
        except TimeoutError:
            container.signal(signal.SIGKILL)
            return await asyncio.to_thread(process.wait)

    def kill(self) -> None:
        """Stop whatever still runs (test clean-up), by PID, and remove the directories."""
        for container in self.containers.values():
            container.signal(signal.SIGCONT)
            container.signal(signal.SIGKILL)
            if container.process is not None:
                container.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def _connects(port: int, timeout: float) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _http_ok(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= int(response.status) < 400
    except OSError:
        return False
