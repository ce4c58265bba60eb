"""Configuration: YAML file < TRELLIS_* environment < flags; clear errors naming the source."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from trellis.cli import serve as cli
from trellis.errors import ConfigError
from trellis.evaluation_limits import EvaluationLimits
from trellis.plugins import BuildContext, build
from trellis.server.config import load_config


def test_file_then_environment_then_flags_win(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "trellis.yaml").write_text(
        "listen: 127.0.0.1:7001\n"
        "store: file:sessions\n"
        "locker: local\n"
        "dispatcher:\n  default: process:tools.yaml\n  routes:\n    charge: grpc://127.0.0.1:7100\n"
        "shutdown_grace: 3s\n"
        "metrics_listen: 127.0.0.1:9001\n"
    )
    env = {
        "TRELLIS_LISTEN": "127.0.0.1:7002",
        "TRELLIS_METRICS_LISTEN": "127.0.0.1:9002",
        "TRELLIS_TOOL_ROUTES": "refund=grpc://127.0.0.1:7200",
        "TRELLIS_MAX_CONTEXT_BYTES": "1000",
    }
    config = load_config(
        file=str(conf / "trellis.yaml"), environ=env, flags={"listen": "127.0.0.1:7003", "store": None}
    )
    assert config.listen == "127.0.0.1:7003"  # flag beats env beats file
    assert config.metrics_listen == "127.0.0.1:9002"  # env beats file
    assert config.store == f"file:{conf / 'sessions'}"  # file (relative to the file); flag not given
    assert config.dispatcher == f"process:{conf / 'tools.yaml'}"
    assert config.tool_routes == {"charge": "grpc://127.0.0.1:7100", "refund": "grpc://127.0.0.1:7200"}
    assert config.shutdown_grace == 3.0
    assert config.max_context_bytes == 1000


def test_config_file_named_by_environment(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("entry_node: begin\n")
    assert load_config(environ={"TRELLIS_CONFIG": str(path)}).entry_node == "begin"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lisen: 1\n", "unknown setting 'lisen'"),
        ("max_message_bytes: -5\n", "'max_message_bytes' must be a positive integer"),
        ("shutdown_grace: soon\n", "'shutdown_grace' is not a duration"),
        ("token: secret\n", "'token' is a secret"),
        ("- a\n- b\n", "must be a mapping"),
        ("dispatcher: {default: 'process:x', extra: 1}\n", "unknown keys ['extra']"),
    ],
)
def test_bad_files_name_the_file_and_the_setting(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(file=str(path), environ={})
    assert message in caught.value.message and "bad.yaml" in caught.value.message


def test_bad_environment_values_name_the_environment() -> None:
    with pytest.raises(ConfigError, match=r"environment: 'lock_ttl'"):
        load_config(environ={"TRELLIS_LOCK_TTL": "forever"})
    with pytest.raises(ConfigError, match="TOOL=URL"):
        load_config(environ={"TRELLIS_TOOL_ROUTES": "charge"})


async def test_unknown_schemes_and_missing_paths_are_config_errors(tmp_path: Path) -> None:
    ctx = BuildContext()
    with pytest.raises(ConfigError, match=r"unknown scheme 'redis:'.*known: .*file:.*memory:"):
        await build("store", "redis://localhost", ctx)
    with pytest.raises(ConfigError, match="is not SCHEME:TARGET"):
        await build("store", "memry", ctx)
    assert (await build("store", "memory", ctx)).value is not None  # bare scheme name (YAML-friendly)
    with pytest.raises(ConfigError, match="does not exist"):
        await build("loader", f"dir:{tmp_path / 'nope'}", ctx)


def test_the_sanitiser_variable_sets_the_default_input_limit() -> None:
    assert load_config(environ={"TRELLIS_MAX_INPUT_SIZE": "100"}).max_input_bytes == 100
    both = {"TRELLIS_MAX_INPUT_SIZE": "100", "TRELLIS_MAX_INPUT_BYTES": "200"}
    assert load_config(environ=both).max_input_bytes == 200


def test_evaluation_budgets_come_from_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "trellis.yaml"
    path.write_text("max_condition_cost: 50\nmax_printf_width: 80\n")
    env = {"TRELLIS_MAX_RANGE_ITERATIONS": "7", "TRELLIS_MAX_PRINTF_WIDTH": "90"}
    limits = load_config(file=str(path), environ=env).evaluation_limits()
    assert limits == EvaluationLimits(max_condition_cost=50, max_range_iterations=7, max_printf_width=90)
    assert load_config(environ={}).evaluation_limits() == EvaluationLimits()
    with pytest.raises(ConfigError, match=r"environment: 'max_range_iterations' must be a positive integer"):
        load_config(environ={"TRELLIS_MAX_RANGE_ITERATIONS": "0"})


def test_entry_and_error_nodes_are_picked_from_the_flow_directory_like_run(tmp_path: Path) -> None:
    """`trellis serve DIR` enters a flow where `trellis run DIR` does
    (docs/engine.md, "Graphs and node IDs")."""
    flow = tmp_path / "checkout"
    flow.mkdir()
    (flow / "checkout.md").write_text("Hello\n")
    (flow / "error.md").write_text("Something failed\n")

    derived = load_config(flags={"flow_dir": str(flow)}, environ={})
    assert (derived.effective_entry_node(), derived.effective_error_node()) == ("checkout", "error")

    (flow / "main.yaml").write_text("content: main\n")
    assert load_config(flags={"flow_dir": str(flow)}, environ={}).effective_entry_node() == "main"

    chosen = {"flow_dir": str(flow), "entry_node": "x", "default_error_node": "y"}
    explicit = load_config(flags=chosen, environ={})
    assert (explicit.effective_entry_node(), explicit.effective_error_node()) == ("x", "y")

    # A loader that is not a directory has nothing to look at: the engine's defaults.
    remote = load_config(flags={"loader": "memory:"}, environ={})
    assert (remote.effective_entry_node(), remote.effective_error_node()) == ("start", "")


def test_the_internal_listener_and_the_watch_cap_come_from_environment_and_flags() -> None:
    defaults = load_config(environ={})
    assert defaults.internal_listen == "" and defaults.max_watch_streams == 256
    env = {"TRELLIS_INTERNAL_LISTEN": "127.0.0.1:7010", "TRELLIS_MAX_WATCH_STREAMS": "12"}
    from_env = load_config(environ=env)
    assert (from_env.internal_listen, from_env.max_watch_streams) == ("127.0.0.1:7010", 12)
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["serve", "--internal-listen", "127.0.0.1:7011", "--max-watch-streams", "3"])
    flagged = load_config(environ=env, flags=cli.flags_from(args))
    assert (flagged.internal_listen, flagged.max_watch_streams) == ("127.0.0.1:7011", 3)
    with pytest.raises(ConfigError, match="max_watch_streams"):
        load_config(environ={"TRELLIS_MAX_WATCH_STREAMS": "0"})


def test_the_event_loop_setting() -> None:
    import asyncio

    from trellis.cli.serve import loop_factory

    assert load_config(environ={}).event_loop == "asyncio"
    assert loop_factory("asyncio") is None
    try:
        import uvloop
    except ImportError:
        with pytest.raises(ConfigError, match="uvloop is not installed"):
            loop_factory("uvloop")
    else:
        chosen = loop_factory("uvloop")
        assert chosen is uvloop.new_event_loop
        loop = chosen()
        try:
            assert isinstance(loop, asyncio.AbstractEventLoop) and type(loop).__module__.startswith("uvloop")
        finally:
            loop.close()
    with pytest.raises(ConfigError, match="event_loop must be asyncio or uvloop, got 'trio'"):
        loop_factory("trio")
    assert load_config(environ={"TRELLIS_EVENT_LOOP": "uvloop"}).event_loop == "uvloop"


def test_plugin_scheme_paths_starting_with_dot_are_relative_to_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "trellis.yaml").write_text(
        "store: sqlite:./data/sessions.db\n"
        "locker: flock:../locks\n"
        "loader: grpc://127.0.0.1:7000\n"
        "dispatcher: {routes: {charge: 'tool:charge.yaml', refund: 'tool:./refund.yaml'}}\n",
        encoding="utf-8",
    )
    config = load_config(file=str(conf / "trellis.yaml"), environ={})
    assert config.store == f"sqlite:{conf / 'data/sessions.db'}"
    assert config.locker == f"flock:{conf / '../locks'}"
    assert config.loader == "grpc://127.0.0.1:7000"  # not a path: untouched
    # A plugin's target without ./ may be a name, not a path: untouched.
    assert config.tool_routes == {"charge": "tool:charge.yaml", "refund": f"tool:{conf / 'refund.yaml'}"}
