"""The harness: datasets -> scenes -> federation runs -> report, and the `fedscene` CLI."""
