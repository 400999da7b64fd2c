"""Data for training draft models on a target model's own outputs."""
