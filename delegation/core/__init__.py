"""The wire contract and the names: models, activity I/O, names, targets, settings, team, schemas. No I/O."""
