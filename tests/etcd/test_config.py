"""EtcdConfig from URLs: what the composition root hands over."""

from __future__ import annotations

import pytest

from trellis.adapters.etcd.config import EtcdConfig, parse_etcd_url
from trellis.errors import ConfigError


def test_url_with_endpoints_prefix_tls_auth_and_timeouts() -> None:
    config = EtcdConfig.from_url(
        "etcd://alice:s%40cret@10.0.0.1:2379,10.0.0.2,[::1]:2380/prod/trellis"
        "?ca=ca.pem&cert=c.pem&key=k.pem&dial_timeout=2s&request_timeout=1500ms&lease_ttl=15s"
    )
    assert config.endpoints == ("10.0.0.1:2379", "10.0.0.2", "[::1]:2380")
    assert config.prefix == "/prod/trellis"
    assert (config.username, config.password) == ("alice", "s@cret")
    assert (config.ca_file, config.cert_file, config.key_file) == ("ca.pem", "c.pem", "k.pem")
    assert config.use_tls
    assert (config.dial_timeout, config.request_timeout, config.lease_ttl) == (2.0, 1.5, 15.0)


def test_url_without_hosts_keeps_the_base_endpoints() -> None:
    base = EtcdConfig(endpoints=("127.0.0.1:1111",), username="u", password="p")
    config, extra = parse_etcd_url("etcd:///flows?graph=tour", base, extra=("graph",))
    assert config.endpoints == ("127.0.0.1:1111",)
    assert config.username == "u"
    assert config.prefix == "/flows"
    assert extra == {"graph": "tour"}
    assert parse_etcd_url("etcd:", base)[0] == base


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("redis://localhost", "etcd:"),
        ("etcd://h:notaport", "notaport"),
        ("etcd://h:1?colour=blue", "colour"),
        ("etcd://h:1?request_timeout=soon", "request_timeout"),
        ("etcd://h:1?cert=c.pem", "cert"),
        ("etcd://h:1?user=bob", "password"),
        ("etcd://::1:2379", "IPv6"),
    ],
)
def test_bad_urls_name_what_is_wrong(url: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        EtcdConfig.from_url(url)
