"""Print uv options that repeat this machine's pip index settings (find-links, extra index URLs).

uv does not read pip's configuration. Where pip is set up with local wheel folders (for example a
CPU build of torch on disk), ``make`` hands the same places to uv with these options. Prints
nothing when pip has no such settings, so uv then uses PyPI alone.
"""

from __future__ import annotations

import shlex
import subprocess
import sys


def main() -> int:
    try:
        text = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                              timeout=60, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    args: list[str] = []
    for line in text.splitlines():
        key, _, value = line.partition("=")
        name = key.split(".")[-1]
        values = shlex.split(value.strip().strip("'\""))
        if name == "find-links":
            args += [f"--find-links={v}" for v in values]
        elif name == "extra-index-url":
            args += [f"--extra-index-url={v}" for v in values]
        elif name == "index-url":
            args += [f"--index-url={v}" for v in values]
    seen: list[str] = []
    for arg in args:
        if arg not in seen:
            seen.append(arg)
    print(" ".join(shlex.quote(a) for a in seen))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
