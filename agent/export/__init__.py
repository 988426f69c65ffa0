"""Export a run's accepted images the ecosystem's way: an HF ImageFolder, parquet shards or WebDataset shards,
each with a dataset card (``README.md``) recording how the data was made. The command is :mod:`agent.export.cli`
(``python -m agent.export``, console script ``ltgc-export``)."""
