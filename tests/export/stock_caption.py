"""Caption images with an exported model using transformers alone (run as a fresh process).

    python stock_caption.py EXPORT_DIR PROMPT MAX_NEW_TOKENS OUT_JSON [--trust-remote-code] IMAGE...

Writes {"texts", "token_ids", "next_logits", "class", "modules"}: greedy captions, the new token
ids up to the first stop token, the prompt's next-token logits, the model class and the `mllm`
modules imported (there must be none).
"""

import json
import sys

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, LlavaForConditionalGeneration


def main(argv: list[str]) -> None:
    folder, prompt, max_new_tokens, out = argv[:4]
    remote = "--trust-remote-code" in argv
    paths = [a for a in argv[4:] if a != "--trust-remote-code"]
    if remote:
        model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)
    else:
        model = LlavaForConditionalGeneration.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=remote)
    messages = [{"role": "user", "content": "<image>\n" + prompt}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    images = [Image.open(p).convert("RGB") for p in paths]
    inputs = processor(images=images, text=[text] * len(images), padding=True, add_special_tokens=False,
                       return_tensors="pt")
    with torch.inference_mode():
        next_logits = model(**inputs).logits[:, -1].tolist()
        output = model.generate(**inputs, max_new_tokens=int(max_new_tokens), do_sample=False)
    stops = model.generation_config.eos_token_id
    stops = set(stops if isinstance(stops, list) else [stops])
    special = set(processor.tokenizer.all_special_ids)
    rows = []
    for row in output[:, inputs["input_ids"].shape[1]:].tolist():
        cut = next((i for i, t in enumerate(row) if t in stops), len(row))
        rows.append([t for t in row[:cut] if t not in special])
    texts = [processor.decode(r, skip_special_tokens=True).strip() for r in rows]
    mllm_modules = sorted(m for m in sys.modules if m == "mllm" or m.startswith("mllm."))
    with open(out, "w") as f:
        json.dump({"texts": texts, "token_ids": rows, "next_logits": next_logits, "class": type(model).__name__,
                   "modules": mllm_modules}, f)


if __name__ == "__main__":
    main(sys.argv[1:])
