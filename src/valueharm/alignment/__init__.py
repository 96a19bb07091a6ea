"""Aligning a model to a value profile: VIM fine-tuning data, benign SFT data, in-context and mitigation prompts."""
