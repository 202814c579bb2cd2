"""The one training loop: state, optimizer, sharding, checkpoints, metrics."""
