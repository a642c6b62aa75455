"""The ``derl-gym`` command line (stub: grows with the meta layer)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="derl-gym", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list registered envs")
    args = parser.parse_args(argv)
    if args.command == "list":
        import gymnasium as gym

        import derl_gym  # noqa: F401

        for env_id in sorted(k for k in gym.registry if k.startswith("derl_gym/")):
            print(env_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
