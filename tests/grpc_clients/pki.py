"""Throw-away certificates for TLS tests, made with the openssl command."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _run(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)


def make_pki(directory: Path) -> Path:
    """ca.pem, server.pem/.key (for 127.0.0.1) and client.pem/.key in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    _run(directory, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=trellis client tests CA", "-keyout", "ca.key", "-out", "ca.pem")
    (directory / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n", encoding="utf-8")
    for who in ("server", "client"):
        _run(directory, "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={who}",
             "-keyout", f"{who}.key", "-out", f"{who}.csr")
        _run(directory, "x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "1", "-extfile", "ext.cnf", "-out", f"{who}.pem")
    return directory
