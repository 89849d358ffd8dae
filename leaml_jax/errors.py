"""Errors a user can act on: caught at the command line and printed without a traceback.

Defined here, importing nothing from the package, so any module can raise them."""


class ConfigError(ValueError):
  """A config value or command-line argument the run cannot use."""


class DataError(ValueError):
  """A source example or record is unusable (names the example id)."""

  def __init__(self, example_id, problem: str):
    self.example_id = example_id
    super().__init__(f"example {example_id!r}: {problem}")


class MissingDataError(FileNotFoundError):
  """The dataset's files are not where the config says."""


class DataSizeError(MissingDataError):
  """Too little usable data to build the dataset."""


class CheckpointError(RuntimeError):
  """Missing or mismatched checkpoint (the message says which directory and what to do)."""


class NonFiniteLossError(RuntimeError):
  """Training produced a NaN/Inf loss or gradient; the last checkpoint holds the last good state."""


class Preempted(RuntimeError):
  """The VM is being pre-empted (SIGTERM, or jax's preemption notice on a multi-host slice): the
  training stage saved a checkpoint at the step it had reached; rerunning resumes from it."""


# Exit status of `python -m leaml_jax.main` after a pre-emption: 75 (EX_TEMPFAIL, "try again").
PREEMPTED_EXIT_CODE = 75

USER_ERRORS = (ConfigError, DataError, CheckpointError, NonFiniteLossError, FileNotFoundError)
