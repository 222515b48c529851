"""The loop: payback, proposals, compile jobs, canary and rollout, run in the background."""
