"""Installed into .venv-vllm by scripts/setup_vllm.sh (mllm): lets PyPI's CUDA torchvision import on a CPU torch.

Its C ops cannot load, and `import torchvision` then fails registering fake kernels for
`torchvision::nms` / `qnms`; declaring their schemas first is enough (vLLM never calls them).
"""

import importlib.abc
import sys


class _DeclareTorchvisionOps(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            import torch

            library = torch.library.Library("torchvision", "DEF")
            for op in ("nms", "qnms"):
                library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _DeclareTorchvisionOps.library = library  # keep the registration alive
        return None


sys.meta_path.insert(0, _DeclareTorchvisionOps())
