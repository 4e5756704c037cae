"""Caption images and clips with an exported model using transformers alone (run as a fresh process).

    python stock_clip_caption.py EXPORT_DIR PROMPT MAX_NEW_TOKENS INPUTS_JSON OUT_JSON [--trust-remote-code]

INPUTS_JSON lists rows `{"frames": [image paths], "timestamps": [seconds] or null}` (null: an image).
Each row is one standard multimodal message, as the model card describes it: a text part "0.5s: "
before each frame's image part (none for an image), then the instruction, rendered by the export's
chat template. The rows go in one batch, padded as the export's tokenizer pads (left), greedy.
Writes {"texts", "token_ids", "prompt_token_ids", "padding_side", "class", "modules"}: as
stock_caption.py, plus each row's prompt ids without padding.
"""

import json
import sys

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, LlavaForConditionalGeneration


def message(row: dict, prompt: str) -> list[dict]:
    parts = [{"type": "image"}] if row["timestamps"] is None else [
        part for t in row["timestamps"] for part in ({"type": "text", "text": f"{t:.1f}s: "}, {"type": "image"})]
    return [{"role": "user", "content": [*parts, {"type": "text", "text": prompt}]}]


def main(argv: list[str]) -> None:
    folder, prompt, max_new_tokens, inputs_json, out = argv[:5]
    remote = "--trust-remote-code" in argv
    loader = AutoModelForImageTextToText if remote else LlavaForConditionalGeneration
    model = loader.from_pretrained(folder, trust_remote_code=remote)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=remote)
    rows = json.loads(open(inputs_json).read())
    stops = model.generation_config.eos_token_id
    stops = set(stops if isinstance(stops, list) else [stops])
    special = set(processor.tokenizer.all_special_ids)
    texts = [processor.apply_chat_template(message(row, prompt), add_generation_prompt=True, tokenize=False)
             for row in rows]
    images = [Image.open(path).convert("RGB") for row in rows for path in row["frames"]]
    inputs = processor(images=images, text=texts, padding=True, add_special_tokens=False, return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=int(max_new_tokens), do_sample=False)
    generated = []
    for row in output[:, inputs["input_ids"].shape[1]:].tolist():
        cut = next((i for i, t in enumerate(row) if t in stops), len(row))
        generated.append([t for t in row[:cut] if t not in special])
    prompt_ids = [ids[mask.bool()].tolist() for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"])]
    mllm_modules = sorted(m for m in sys.modules if m == "mllm" or m.startswith("mllm."))
    with open(out, "w") as f:
        json.dump({"texts": [processor.decode(r, skip_special_tokens=True).strip() for r in generated],
                   "token_ids": generated, "prompt_token_ids": prompt_ids,
                   "padding_side": processor.tokenizer.padding_side, "class": type(model).__name__,
                   "modules": mllm_modules}, f)


if __name__ == "__main__":
    main(sys.argv[1:])
