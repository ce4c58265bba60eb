"""The Secrets exactly as deploy/README.md makes them: its ``openssl`` and ``printf``
lines run in a temporary directory, then its ``kubectl create secret`` lines with
``--dry-run=client -o yaml`` (no cluster needed), read back as name -> key -> bytes.
The local pod tests mount these, so the documented commands are the ones proven."""

from __future__ import annotations

import base64
import os
import re
import subprocess
from pathlib import Path

from ruamel.yaml import YAML

from tests.deploy.rendering import DEPLOY, kubectl

_COMMAND = re.compile(r"^    ((?:openssl|printf) .+|kubectl -n \S+ create secret generic .+)$", re.M)


def documented_secrets(directory: Path) -> dict[str, dict[str, bytes]]:
    readme = (DEPLOY / "README.md").read_text()
    secrets: dict[str, dict[str, bytes]] = {}
    for line in _COMMAND.findall(readme):
        if ">>" in line or "|" in line:
            continue  # the rotation steps, which change what the first steps made
        if line.startswith("kubectl"):
            argv = [kubectl(), *line.split()[1:], "--dry-run=client", "-o", "yaml"]
            done = subprocess.run(
                argv,
                cwd=directory,
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ, "KUBECONFIG": str(directory / "no-cluster")},
            )
            assert done.returncode == 0, f"{line}\n{done.stderr}"
            secret = YAML(typ="safe").load(done.stdout)
            data = {key: base64.b64decode(value) for key, value in secret["data"].items()}
            secrets[secret["metadata"]["name"]] = data
        else:
            done = subprocess.run(
                ["bash", "-ec", line], cwd=directory, capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, f"{line}\n{done.stderr}"
    return secrets
