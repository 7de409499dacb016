"""Optimize the DSPy delegation decider (same as `delegation optimize`).

python scripts/optimize_delegation_prompts.py [--optimizer demo-search] [--max-demos 32] [--seed 7]
"""

import typer

from delegation.cli.learning_commands import optimize_command

if __name__ == "__main__":
    typer.run(optimize_command)
