"""Caption images and clips with an exported model in vLLM alone, through its chat API (run in .venv-vllm).

    .venv-vllm/bin/python -I vllm_caption.py EXPORT_DIR PROMPT OUT_JSON IMAGE...
    .venv-vllm/bin/python -I vllm_caption.py EXPORT_DIR PROMPT OUT_JSON --rows ROWS_JSON

ROWS_JSON lists rows `{"frames": [image paths], "timestamps": [seconds] or null}` (null: an image;
each IMAGE is such a row). Each row is sent as the standard multimodal message: an image as
`[{"type": "image_pil"}, {"type": "text"}]`; a clip, as the model card describes, with a text part
"0.5s: " before each frame's image part, then the instruction. The export's own chat template and
generation config, greedy. Writes {"texts", "token_ids", "prompt_token_ids", "vllm"}: the new
token ids up to the first stop token (special tokens dropped), and the prompt ids vLLM built (its
image tokens expanded).
"""

import json
import os
import sys


def content(row: dict, prompt: str, image) -> list[dict]:
    frames = [{"type": "image_pil", "image_pil": image(path)} for path in row["frames"]]
    if row["timestamps"] is not None:
        frames = [part for t, frame in zip(row["timestamps"], frames)
                  for part in ({"type": "text", "text": f"{t:.1f}s: "}, frame)]
    return [*frames, {"type": "text", "text": prompt}]


def main(argv: list[str]) -> None:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # one process: faster start on CPU
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import vllm
    from PIL import Image
    from vllm import LLM

    folder, prompt, out = argv[:3]
    if argv[3:4] == ["--rows"]:
        rows = json.loads(open(argv[4]).read())
    else:
        rows = [{"frames": [path], "timestamps": None} for path in argv[3:]]
    llm = LLM(model=folder, dtype="float32", gpu_memory_utilization=0.2, enforce_eager=True,
              distributed_executor_backend="uni", limit_mm_per_prompt={"image": max(len(r["frames"]) for r in rows)},
              seed=0)
    params = llm.get_default_sampling_params()  # from the export's generation_config.json
    params.temperature = 0.0
    conversations = [[{"role": "user", "content": content(row, prompt, lambda p: Image.open(p).convert("RGB"))}]
                     for row in rows]
    outputs = llm.chat(conversations, params, use_tqdm=False)
    stops, tokenizer = set(params.all_stop_token_ids), llm.get_tokenizer()
    special = set(tokenizer.all_special_ids)
    generated = []
    for output in outputs:
        ids = list(output.outputs[0].token_ids)
        generated.append([t for t in ids[:next((i for i, t in enumerate(ids) if t in stops), len(ids))]
                          if t not in special])
    with open(out, "w") as handle:
        json.dump({"texts": [tokenizer.decode(r, skip_special_tokens=True).strip() for r in generated],
                   "token_ids": generated, "prompt_token_ids": [list(o.prompt_token_ids) for o in outputs],
                   "vllm": vllm.__version__}, handle)


if __name__ == "__main__":  # vLLM may spawn processes that import this file
    sys.exit(main(sys.argv[1:]))
