"""Errors the deciders raise, importable without pulling in DSPy or Instructor."""


class InvalidDecisionError(ValueError):
    """The model answered something that is not a valid decision for this request."""


class ProgramLoadError(ValueError):
    """A program file cannot be served."""
