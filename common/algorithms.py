"""The training algorithms: one object each, the one place that tells them apart.

A model's parameters fall in groups by name prefix (`encoder.`, `head.`, `disc.`, and
`head.local_ids.`, a scene's own item-id parameters and released statistics, which are never
averaged; its released popularity counts may be sent beside them to be pooled:
`pools_popularity`). An `Algorithm` says which
groups go to the server and come back averaged, how a round trains, and whether it can be
aligned; the client, the server, the harness and the CLI ask it instead of comparing
names. Adding an algorithm (FedBN, Ditto...) means adding one object to `ALGORITHMS` and its
name to `config.Algorithm`.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedscene.common.errors import ConfigError

ENCODER = "encoder."
HEAD = "head."
LOCAL_IDS = "head.local_ids."
DISC = "disc."


@dataclass(frozen=True)
class Phase:
    """One training call of a round: the parameter groups it trains (all when empty) and
    whether its length is `training.head_epochs` (else `training.local_epochs`)."""

    trainable: tuple[str, ...]
    head_epochs: bool = False


@dataclass(frozen=True)
class Algorithm:
    """A training algorithm.

    `shares`: the parameter groups a scene sends to the server and takes back averaged
    (empty: nothing leaves, and with it no alignment, which needs a shared encoder);
    `federated`: it runs over Flower, one scene per node, under each scene's DP account
    (else the harness pools scenes, without DP);
    `head_first`: a round fits the head alone first, then the encoder alone (FedRep);
    `reference`: the arm every other arm's gain is measured against.
    """

    name: str
    description: str
    shares: tuple[str, ...] = ()
    federated: bool = True
    head_first: bool = False
    reference: bool = False

    @property
    def alignable(self) -> bool:
        return bool(self.shares)

    @property
    def pools_popularity(self) -> bool:
        """Whether scenes also send their released popularity counts, to be pooled over
        the federation for the scenes too small to count their own (`client.pooled`):
        every algorithm that shares parameters."""
        return bool(self.shares)

    def shared_prefixes(self, aligned: bool = False) -> tuple[str, ...]:
        """What goes to the server: the shared groups, plus the discriminator if aligned."""
        if not self.shares:
            return ()
        return self.shares + (DISC,) if aligned else self.shares

    def phases(self, unlabelled: bool = False, aligned: bool = False) -> list[Phase]:
        """A round's training calls. An unlabelled scene (alignment) has no target to fit
        a head to: it trains the encoder (and discriminator) alone whatever the algorithm."""
        encoder = (ENCODER, DISC) if aligned else (ENCODER,)
        if unlabelled:
            return [Phase(encoder)]
        if self.head_first:
            return [Phase((HEAD,), head_epochs=True), Phase(encoder)]
        return [Phase(())]


ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (
    Algorithm("local", "each scene trains its whole model alone (the reference)",
              reference=True),
    Algorithm("fedavg", "encoder and head's scoring layers averaged (FedAvg)",
              shares=(ENCODER, HEAD)),
    Algorithm("fedper", "encoder averaged, head personal (FedPer)", shares=(ENCODER,)),
    Algorithm("fedrep", "head fitted first, then the encoder, which is averaged (FedRep)",
              shares=(ENCODER,), head_first=True),
    Algorithm("centralized", "all scenes pooled in one model, without DP (an upper "
                             "reference, never private)", federated=False),
)}


# What a deployment trains when its coordinator names no algorithm: the encoder shared, each
# partner's head kept at home.
DEPLOYMENT_DEFAULT = "fedper"


def algorithm(name: str) -> Algorithm:
    """The algorithm called `name` (a config's values are validated against these names)."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ConfigError(f"unknown algorithm {name!r}; use one of "
                         f"{', '.join(ALGORITHMS)}") from None


def describe(names: list[str]) -> str:
    """"name: what it does" for each of `names` (for help texts)."""
    return "; ".join(f"{n}: {ALGORITHMS[n].description}" for n in names)


def federated_names() -> list[str]:
    """Names of the algorithms that run over Flower."""
    return [a.name for a in ALGORITHMS.values() if a.federated]


def reference_name() -> str:
    """The reference arm's algorithm (gains are measured against it)."""
    return next(a.name for a in ALGORITHMS.values() if a.reference)


def shared_prefixes(name: str, aligned: bool = False) -> tuple[str, ...]:
    """What `name` sends to the server (see `Algorithm.shared_prefixes`)."""
    return algorithm(name).shared_prefixes(aligned)
