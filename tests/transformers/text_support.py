"""Helpers for the text-model tests: random sentences over a small vocabulary (words the tiny BERT knows and some it does not)."""

from __future__ import annotations

import random

WORDS = ("the a good bad movie film day night food service very really happy sad love hate i you we they is was not "
         "so fine ok hello world test unseen zebra quokka 42 café naïve").split()


def sentences(n: int, seed: int = 1, longest: int = 30) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, longest))) for _ in range(n)]
