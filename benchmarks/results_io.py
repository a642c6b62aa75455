"""Where benchmark scripts write their figures: ``<out>.json`` (the payload) and ``<out>.md`` (the table)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_results(out: str | Path, payload: Any, markdown: str) -> None:
    """Write ``payload`` as JSON to ``<out>.json`` and ``markdown`` to ``<out>.md``, creating the folder."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(payload, indent=1, default=str))
    out.with_suffix(".md").write_text(markdown if markdown.endswith("\n") else markdown + "\n")
