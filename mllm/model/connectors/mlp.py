"""`mlp2x_gelu`: transformers' own LLaVA projector (linear -> GELU -> linear).

Using the stock class keeps the trained model a stock `LlavaForConditionalGeneration`
checkpoint, loadable by transformers and vLLM without custom code.
"""

from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

Connector = LlavaMultiModalProjector
