"""Errors a user can act on: caught at the command line and printed without a traceback."""
from leaml_jax.config_lib import ConfigError
from leaml_jax.train import NonFiniteLossError


class DataError(ValueError):
  """Missing/corrupt dataset input; the message names the file or example id."""


class CheckpointError(RuntimeError):
  """Missing or mismatched checkpoint."""


USER_ERRORS = (ConfigError, DataError, CheckpointError, NonFiniteLossError, FileNotFoundError)
