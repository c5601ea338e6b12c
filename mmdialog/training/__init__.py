"""Fine-tuning the fused model with accelerate: one loop for CPU, one GPU, DDP, FSDP or DeepSpeed."""
