"""One database helper per backend, used by the index engines and by the service's job, file, adapter and cache
stores alike: each owns its connections, the async boundary (run) and the schema version (migrations)."""
