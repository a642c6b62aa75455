"""Random GSM8K-style completions for property tests of math rewards (shared by the TRL tests)."""

from __future__ import annotations

import random


def random_completion(rng: random.Random, truth: str) -> str:
    """Return a random completion mixing step lines, numbers, ``\\boxed{}`` and ``####`` answers (right or wrong)."""
    parts = []
    for _ in range(rng.randint(0, 4)):
        parts.append(rng.choice(["Step 1: add.", "First, 3 + 4 = 7.", "Then 7 * 2 = 14.", "Finally done.",
                                 f"so {truth}", str(rng.randint(0, 99)), "\\boxed{" + rng.choice([truth, "5", ""]) + "}",
                                 "#### " + rng.choice([truth, "1"]), "The answer is", "\n"]))
    return "\n".join(parts) if rng.random() < 0.7 else " ".join(parts)
