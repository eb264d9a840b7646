"""What a bundle runs on the cluster: model, FSDP2 trainer, data loader, checkpoints."""
