"""Adapters: in-process, etcd and gRPC implementations of the ports."""
