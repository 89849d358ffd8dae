"""The one error type the data layer raises for bad input data."""


class DataError(ValueError):
  """A source example or record is unusable (names the example id)."""

  def __init__(self, example_id, problem: str):
    self.example_id = example_id
    super().__init__(f"example {example_id!r}: {problem}")
