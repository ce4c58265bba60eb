"""Helpers shared by the test folders: real etcd processes and fixtures, servers,
certificates, transports, CLI runs, compatibility flows and tool scripts. Tests
import helpers from here, never from a conftest module or another test folder."""
