"""The decision store (records, feedback, re-optimization runs) and the file helpers."""
