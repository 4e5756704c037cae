"""mllm: build, train and run image/video recaptioners."""

__version__ = "0.1.0"
