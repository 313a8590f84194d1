"""Training on Lightning: the LightningModule, Trainer assembly, and the cached-feature path."""
