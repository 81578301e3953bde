"""LoGo: instance-level LoRA routing and on-the-fly merging, with no training and no labels."""
