"""The pipeline's stage names, in pipeline order: a module of its own, with no Prefect import, so the CLI can
list them in its help without loading the flows."""

STAGES = ("ingest", "preprocess", "embed", "verify", "train")
DEFAULT_STAGES = ("ingest", "preprocess", "embed", "verify")
