"""The processor of an mllm captioner whose image takes a fixed number of tokens (Q-Former queries).

Self-contained (imports transformers only); bundled with the model for `trust_remote_code=True`.
"""

from transformers import LlavaProcessor


class MllmCaptionerProcessor(LlavaProcessor):
    """`LlavaProcessor` whose `<image>` expands to `image_seq_length` tokens, whatever the image size."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, image_token="<image>",
                 image_seq_length: int = 1, **kwargs):
        self.image_seq_length = image_seq_length
        super().__init__(image_processor, tokenizer, chat_template=chat_template, image_token=image_token, **kwargs)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        return self.image_token * self.image_seq_length
