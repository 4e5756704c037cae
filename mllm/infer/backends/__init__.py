"""Captioning backends: how a batch of images becomes captions (`vllm`: vLLM in its own virtualenv)."""
