"""Settings, feature flags and the wire contract (standard library and pydantic only)."""
