"""Command line: ``sluicegate [serve] [--config FILE] [--host H] [--port P] [--workers N]`` and
``sluicegate check-config FILE``."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sluicegate", description="Streaming OpenAI-compatible Files/Responses gateway.")
    sub = p.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the gateway (default)")
    check = sub.add_parser("check-config", help="validate a config file; exit 2 if it is invalid")
    check.add_argument("file")
    for target in (p, serve):
        target.add_argument("--config", default=None, help="YAML config file (or SLUICEGATE_CONFIG)")
        target.add_argument("--host", default=None)
        target.add_argument("--port", type=int, default=None)
        target.add_argument("--workers", type=int, default=None, help="processes sharing the port (SO_REUSEPORT)")
        target.add_argument("--log-level", default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .config import ConfigError, check_config_main, load_config

    if args.command == "check-config":
        return check_config_main(args.file)
    path = args.config or os.environ.get("SLUICEGATE_CONFIG")
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"sluicegate: invalid config {path}:\n{exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"sluicegate: cannot read config: {exc}", file=sys.stderr)
        return 2
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port), ("workers", args.workers)) if v is not None}
    if overrides:
        config = dataclasses.replace(config, server=dataclasses.replace(config.server, **overrides))
    from .server import run, setup_logging

    setup_logging(args.log_level or config.log_level)
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
