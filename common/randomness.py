"""Where the randomness of a DP training call comes from: DP noise and Poisson sampling.

The adversary DP must hold against is first of all the coordinator, which knows every seed,
round number and config value it sent. Noise it can regenerate is no noise, so by default
each training call draws a fresh 64-bit seed from the operating system's entropy
(`secrets`), which no other party can know or repeat. Only a simulation may opt into noise
drawn from the run's seed (`privacy.reproducible_noise`), and every ledger entry it writes
says that its guarantee does not hold.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np
import torch

SECRET = "os-entropy: a fresh 64-bit seed from the operating system (secrets) per call"
REPRODUCIBLE = "seeded from the run's seed and round: reproducible, NOT private"


@dataclass(frozen=True)
class NoiseSource:
    """The generators of one training call: DP noise (torch) and Poisson sampling."""

    noise: torch.Generator
    sampling: torch.Generator
    examples: np.random.Generator  # which examples of a sampled shopper a step uses
    description: str


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def secret_source() -> NoiseSource:
    """Generators seeded from OS entropy: unknown to, and unrepeatable by, anyone else."""
    return NoiseSource(_generator(secrets.randbits(63)), _generator(secrets.randbits(63)),
                       np.random.default_rng(secrets.randbits(128)), SECRET)


def reproducible_source(seed: int) -> NoiseSource:
    """Generators derived from `seed`: the same run repeats exactly, and whoever knows the
    seed can subtract the noise. For simulations that must repeat, never for deployment."""
    derived = np.random.default_rng([seed, 7919]).integers(2**62, size=2)
    return NoiseSource(_generator(int(derived[0])), _generator(int(derived[1])),
                       np.random.default_rng([seed, 104729]), REPRODUCIBLE)


def noise_source(reproducible: bool, seed: int) -> NoiseSource:
    """The secret source, or the seeded one when the config asks for reproducible noise."""
    return reproducible_source(seed) if reproducible else secret_source()
