"""Errors a user can act on: caught at the command line and printed without a traceback."""
from leaml_jax.checkpoint import CheckpointError
from leaml_jax.config_lib import ConfigError
from leaml_jax.data.errors import DataError
from leaml_jax.train import NonFiniteLossError


USER_ERRORS = (ConfigError, DataError, CheckpointError, NonFiniteLossError, FileNotFoundError)
