"""What `composer train.py <recipe>` runs besides llm-foundry's trainer: the recipe loaded and
checked before any worker starts, and our extensions of Composer, llm-foundry and streaming
for training."""
