"""Command line: ``sluicegate [serve] [--config FILE] [--host H] [--port P] [--workers N]
[--log-level L] [--data-dir DIR]``, ``sluicegate check-config FILE`` and ``sluicegate --version``.

Each serve option also has an environment variable; a value is taken from the flag, else the
variable, else the config file, else the built-in default. A flag or variable is checked as
the same key in the config file is, and a bad one exits with status 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable, Mapping

from .config import DEFAULT_DATA_DIR, LOG_LEVELS, ConfigError, ServerConfig, check_config_main, check_log_level, load_config
from .config_values import to_int


def _integer(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            raise ValueError(f"must be an integer, not {text!r}") from None
        return to_int(number, minimum=minimum, maximum=maximum)
    return parse


@dataclass(frozen=True)
class _Option:
    flag: str
    env: str
    key: str | None                 # the config key it overrides (None: --config itself)
    parse: Callable[[str], Any]
    metavar: str
    help: str
    default: Any                    # as shown in --help

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")


_SERVER = ServerConfig()
OPTIONS = (
    _Option("--config", "SLUICEGATE_CONFIG", None, str, "FILE", "YAML config file", "none, built-in defaults"),
    _Option("--host", "SLUICEGATE_HOST", "server.host", str, "HOST", "address to listen on", _SERVER.host),
    _Option("--port", "SLUICEGATE_PORT", "server.port", _integer(1, 65535), "PORT", "port to listen on", _SERVER.port),
    _Option("--workers", "SLUICEGATE_WORKERS", "server.workers", _integer(1), "N",
            "worker processes serving the one listening socket", _SERVER.workers),
    _Option("--log-level", "SLUICEGATE_LOG_LEVEL", "log_level", check_log_level, "LEVEL",
            f"one of {', '.join(LOG_LEVELS)}", "info"),
    _Option("--data-dir", "SLUICEGATE_DATA_DIR", "server.data_dir", str, "DIR",
            "base of the default store and provider paths", DEFAULT_DATA_DIR),
)


def _argument_type(option: _Option) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return option.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def _version() -> str:
    try:
        return metadata.version("sluicegate")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sluicegate", description="Streaming OpenAI-compatible Files/Responses gateway.",
        epilog="Each option's value comes from the flag, else its environment variable, else the config "
               "file, else the default.")
    p.add_argument("--version", action="version", version=f"sluicegate {_version()}")
    sub = p.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the gateway (default)")
    check = sub.add_parser("check-config", help="validate a config file; exit 2 if it is invalid")
    check.add_argument("file")
    for target in (p, serve):
        for option in OPTIONS:
            # SUPPRESS: an option given before "serve" is not reset by the subcommand's default.
            target.add_argument(option.flag, type=_argument_type(option), metavar=option.metavar,
                                default=argparse.SUPPRESS,
                                help=f"{option.help} (default: {option.default}; env: {option.env})")
    return p


def _overrides(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, Any]:
    """Config keys set by a flag or, failing that, an environment variable. Raises ValueError
    naming the variable for an invalid value."""
    values: dict[str, Any] = {}
    for option in OPTIONS:
        if hasattr(args, option.dest):
            values[option.flag] = getattr(args, option.dest)
        elif env.get(option.env):
            try:
                values[option.flag] = option.parse(env[option.env])
            except ValueError as exc:
                raise ValueError(f"{option.env}: {exc}") from None
    return values


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return check_config_main(args.file)
    try:
        given = _overrides(args, os.environ)
    except ValueError as exc:
        print(f"sluicegate: {exc}", file=sys.stderr)
        return 2
    path = given.pop("--config", None)
    overrides = {option.key: given[option.flag] for option in OPTIONS
                 if option.key is not None and option.flag in given}
    try:
        config = load_config(path, overrides=overrides)
    except ConfigError as exc:
        print(f"sluicegate: invalid config {path}:\n{exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"sluicegate: cannot read config: {exc}", file=sys.stderr)
        return 2
    from .logs import setup_logging
    from .server import run

    setup_logging(config.log_level)
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
