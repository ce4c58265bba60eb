"""The ``trellis`` command line: run, validate, graph and session subcommands."""
