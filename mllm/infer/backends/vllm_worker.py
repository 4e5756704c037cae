"""The vLLM side of `mllm.infer.backends.vllm`: runs offline `vllm.LLM` in vLLM's own virtualenv.

    .venv-vllm/bin/python -I vllm_worker.py      (started by VllmCaptioner; imports vllm, never mllm)

JSON lines on stdin / stdout, nothing pickled. The first line configures the engine:
    {"model": EXPORT_DIR, "engine_args": {...}, "lora": {"path": ADAPTER_DIR, "rank": R} or null,
     "max_images": N (images per prompt at most: a clip's frames)}
and is answered {"ready": true, "vllm": VERSION} (or {"error": ...}). Then each request
    {"prompts": [[token ids with an image token per image], ...], "images": [[base64 PNG, ...], ...],
     "lora": true (with the adapter) or false (without), "sampling": {...}}
(a row with no image is a text prompt) is answered {"outputs": [[generated token ids], ...]} or
{"error": "..."}. EOF on stdin ends it.
Everything vLLM prints goes to stderr, so stdout carries only the protocol.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sys
from typing import get_args

CPU_ENGINE_ARGS = {
    "gpu_memory_utilization": 0.2,  # on CPU: the share of RAM for the KV cache
    "enforce_eager": True,  # torch.compile warm-up costs more than it saves here
    "distributed_executor_backend": "uni",
}


def _image(encoded: str):
    from PIL import Image

    return Image.open(io.BytesIO(base64.b64decode(encoded))).convert("RGB")


def _engine(setup: dict):
    from vllm import LLM
    from vllm.model_executor.models.deepseek_ocr import NGramPerReqLogitsProcessor
    from vllm.platforms import current_platform

    args = {"seed": 0, "limit_mm_per_prompt": {"image": setup.get("max_images", 1)}, **setup.get("engine_args", {})}
    if current_platform.is_cpu():
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # one process: faster start on CPU
        args = {**CPU_ENGINE_ARGS, **args}
    if setup.get("lora"):
        from vllm.config.lora import MaxLoRARanks

        args.setdefault("enable_lora", True)
        args.setdefault("max_lora_rank", min(r for r in get_args(MaxLoRARanks) if r >= setup["lora"]["rank"]))
    # NGramPerReqLogitsProcessor: vLLM's no-repeat-n-gram rule, per request via extra_args.
    return LLM(model=setup["model"], logits_processors=[NGramPerReqLogitsProcessor], **args)


def _generate(llm, request: dict, lora) -> list[list[int]]:
    from vllm import SamplingParams

    params = SamplingParams(**request["sampling"])
    inputs = []
    for ids, pngs in zip(request["prompts"], request["images"], strict=True):
        images = [_image(png) for png in pngs]
        inputs.append({"prompt_token_ids": ids, **({"multi_modal_data": {"image": images}} if images else {})})
    outputs = llm.generate(inputs, params, use_tqdm=False, lora_request=lora if request.get("lora", True) else None)
    return [list(output.outputs[0].token_ids) for output in outputs]


def serve(stdin, protocol) -> int:
    """Answer requests until EOF; the exit code is 1 when vLLM failed to load or its engine died."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # mllm decoded and checked these images before re-encoding them

    def send(message: dict) -> None:
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    setup = json.loads(stdin.readline())
    try:
        import vllm
        from vllm.lora.request import LoRARequest
        from vllm.v1.engine.exceptions import EngineDeadError

        llm = _engine(setup)
        lora = LoRARequest("mllm", 1, setup["lora"]["path"]) if setup.get("lora") else None
    except Exception as error:
        send({"error": f"vLLM could not load {setup.get('model')}: {type(error).__name__}: {error}"})
        return 1
    send({"ready": True, "vllm": vllm.__version__})
    for line in stdin:
        try:
            send({"outputs": _generate(llm, json.loads(line), lora)})
        except EngineDeadError:
            raise  # no request can succeed any more: exit, and mllm stops the job
        except Exception as error:  # one bad request must not end the worker
            send({"error": f"{type(error).__name__}: {error}"})
    return 0


if __name__ == "__main__":  # vLLM may spawn processes that import this file
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")  # a local model: nothing to report or fetch
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.exit(serve(sys.stdin, channel))
