"""An mllm captioner whose connector is not LLaVA's MLP, as a `LlavaForConditionalGeneration`.

Only the projector differs from stock LLaVA: the tower, the image-token merge and generation are
transformers' own. The connector is `Connector` from `mllm_connector.py`, the connector's own file
in mllm, copied beside this one by the export. Self-contained (imports torch, transformers and the
files beside it), loaded with `trust_remote_code=True`.
"""

from transformers import LlavaForConditionalGeneration, LlavaModel

from .configuration_mllm_captioner import MllmCaptionerConfig
from .mllm_connector import Connector


class MllmCaptionerModel(LlavaModel):
    config_class = MllmCaptionerConfig

    def __init__(self, config: MllmCaptionerConfig):
        super().__init__(config)
        self.multi_modal_projector = Connector(**config.connector["settings"])
        self.post_init()


class MllmCaptionerForConditionalGeneration(LlavaForConditionalGeneration):
    config_class = MllmCaptionerConfig

    def __init__(self, config: MllmCaptionerConfig):
        super().__init__(config)
        self.model = MllmCaptionerModel(config)
        self.post_init()
