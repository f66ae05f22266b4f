"""Training with a teacher: the distiller (teacher + losses), the distillation criterion, the trainer, KD state."""
