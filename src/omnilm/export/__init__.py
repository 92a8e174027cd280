"""`omnilm export`: hand a model to another engine (formats: see omnilm.cli.export)."""
