"""Training with a teacher: views, targets, the distillation criterion and the trainer."""
