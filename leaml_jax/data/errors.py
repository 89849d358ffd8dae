"""The one error type the data layer raises for bad input data (defined in leaml_jax.errors)."""
from leaml_jax.errors import DataError

__all__ = ["DataError"]
