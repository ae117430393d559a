"""The Flower ClientApp: one scene's local training, persistent state and privacy ledger."""
