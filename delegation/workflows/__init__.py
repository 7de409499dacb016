"""Temporal workflows. Modules here import only temporalio, the standard library and ``core`` models."""
