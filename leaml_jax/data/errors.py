"""The errors the data layer raises for bad or missing input data (user errors: exit 2)."""


class DataError(ValueError):
  """A source example or record is unusable (names the example id)."""

  def __init__(self, example_id, problem: str):
    self.example_id = example_id
    super().__init__(f"example {example_id!r}: {problem}")


class MissingDataError(FileNotFoundError):
  """The dataset's files are not where the config says."""


class DataSizeError(MissingDataError):
  """Too little usable data to build the dataset."""
