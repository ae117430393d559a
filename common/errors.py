"""Errors a user can act on: each message names the file, field or value and what to do."""


class FedsceneError(Exception):
    """Base class of fedscene's user-facing errors (printed as one line by the CLI)."""


class ConfigError(FedsceneError):
    """A configuration file or value is invalid."""


class DataError(FedsceneError):
    """A dataset does not satisfy the scene data contract."""
