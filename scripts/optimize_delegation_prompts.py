"""Optimize the DSPy delegation decider (same as `delegation optimize`).

python scripts/optimize_delegation_prompts.py [--optimizer bootstrap] [--max-demos 8] [--seed 7]
"""

import typer

from delegation.cli.learning_commands import optimize_command

if __name__ == "__main__":
    typer.run(optimize_command)
