"""The model shapes the benchmarks build offline with random weights, as `model.vision` / `model.llm`
config fields (scripts/bench_train.py, scripts/bench_caption.py)."""

SIZES = {  # name -> {"vision": model.vision fields, "llm": model.llm fields over the config's}
    "tiny": {  # configs/tiny.yaml's shapes (a dry run of the script in seconds)
        "vision": {"config": {"model_type": "siglip_vision_model", "hidden_size": 64, "intermediate_size": 128,
                              "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
                   "image_processor": {"image_processor_type": "SiglipImageProcessor", "size": {"height": 32, "width": 32}},
                   "feature_layer": -1},
        "llm": {"config": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                           "num_attention_heads": 1, "num_key_value_heads": 1, "max_position_embeddings": 512,
                           "tie_word_embeddings": True}}},
    "quickstart": {  # SmolLM2-135M-Instruct's own weights; the tower of configs/quickstart.yaml, random
        "vision": {"config": {"model_type": "siglip_vision_model", "hidden_size": 128, "intermediate_size": 512,
                              "num_hidden_layers": 3, "num_attention_heads": 4, "image_size": 48, "patch_size": 16},
                   "image_processor": {"image_processor_type": "SiglipImageProcessor", "size": {"height": 48, "width": 48}},
                   "feature_layer": -1, "select_strategy": "full"},
        "llm": {}},
    "1.5b": {  # ../shared/gpu_bench/bench_gpu.py: SigLIP-base-sized tower, Qwen2-1.5B-sized LLM, random
        "vision": {"config": {"model_type": "siglip_vision_model", "hidden_size": 768, "intermediate_size": 3072,
                              "num_hidden_layers": 12, "num_attention_heads": 12, "image_size": 224, "patch_size": 16},
                   "image_processor": {"image_processor_type": "SiglipImageProcessor",
                                       "size": {"height": 224, "width": 224}},
                   "feature_layer": -2, "select_strategy": "full"},
        "llm": {"config": {"model_type": "qwen2", "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                           "num_attention_heads": 12, "num_key_value_heads": 2, "max_position_embeddings": 4096,
                           "tie_word_embeddings": True}}},
}
