"""matrix.yaml and what is resolved from it once: the model (frozen dataclasses), each key declared
once (keys), the line-aware YAML reader, the loader, the JSON Schema, matrix.lock and the run's
Options."""
