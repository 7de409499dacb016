"""Feature flags, bucketing, audited flag changes, the guardrail and the A/B report's numbers."""
