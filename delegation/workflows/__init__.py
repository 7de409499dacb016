"""Temporal workflows, and the client helpers and schedule for callers.

Workflow modules import only temporalio and the standard library, and bring ``core`` and
activities in through ``workflow.unsafe.imports_passed_through()``.
"""
