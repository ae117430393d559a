"""The Flower ServerApp: rounds, partial aggregation, server-side update, checkpoints."""
