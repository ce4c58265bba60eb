"""Throw-away certificates for TLS tests, made with the openssl command.

One generator for every TLS test (gRPC server, gRPC clients, etcd): a CA, a
server certificate valid for 127.0.0.1 and localhost, and a client certificate,
each marked for its own use so that strict peers (etcd) accept them too.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def make_pki(directory: Path, openssl: str = "openssl") -> Path:
    """Write ca.pem, server.pem/.key and client.pem/.key into ``directory`` (created if
    missing) and return it. ``openssl`` is the command to run."""
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=trellis-test-ca", "-keyout", "ca.key", "-out", "ca.pem")
    for name, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        (directory / f"{name}.ext").write_text(
            f"subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n", encoding="utf-8"
        )
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=trellis-test-{name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem")
    return directory
