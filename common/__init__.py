"""What client and server both need: configuration, scene data, the model, training."""
