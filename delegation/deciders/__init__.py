"""One decision's hot path: the Decider protocol and errors, the LLM endpoint, the policy, both deciders."""
