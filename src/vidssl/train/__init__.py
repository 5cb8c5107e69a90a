"""Self-supervised training from video: view samplers, augmentations, objectives, the trainer."""
