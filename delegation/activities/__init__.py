"""Temporal activities: all I/O happens here (flags, LLM calls, the decision store)."""
