"""`mlp2x_gelu`: transformers' own LLaVA projector (linear -> GELU -> linear).

Using the stock class keeps the trained model a stock `LlavaForConditionalGeneration`
checkpoint, loadable by transformers and vLLM without custom code.
"""

from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from mllm.model.connectors import ConnectorSpec, register


@register("mlp2x_gelu")
def build(spec: ConnectorSpec) -> LlavaMultiModalProjector:
    return LlavaMultiModalProjector(spec.llava_config)
