"""sft-harness: evaluation-first supervised fine-tuning experiments."""

__version__ = "0.1.0"
