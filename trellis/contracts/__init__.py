"""Public contract suites: every adapter of a port passes the same tests (see each module)."""
