"""A small vision tower that can see the synthetic scenes, for the offline quickstart.

No pretrained tower can be downloaded here, and a frozen random one gives the LLM nothing to
read (calibration.md). Real towers are pretrained on labels or captions; this one is pretrained,
supervised, on the scenes' own facts: every patch token learns the facts of the object in its grid
cell (or "nothing"), and its cell, so the facts sit plainly in the tokens the connector receives.
The facts follow what the scenes have (`cell_facts`): colour and shape always; size, fill texture,
the letters of a sign's word and the object behind it where the scenes have them. Letters are
learnt one place at a time (first, second, third letter), not as whole words, so held-out words
made of seen letters are within the tower's reach. A penalty on attention that leaves the token's
own cell keeps each token local: without it every token also carries the other cells' objects (a
linear probe on a left-column token read the right column's colour at 0.98), and the quickstart's
position score was 0.53 instead of 0.72 (both measured with the earlier phrase captions, README).
The result is a stock `SiglipVisionModel` + `SiglipImageProcessor` folder, loaded like a Hub tower.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from tqdm import tqdm
from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

from mllm.bench.scenes import load_truth
from mllm.config import Precision
from mllm.precision import announce, resolve_precision

OBJECT_FACTS = ("colour", "shape", "size", "texture")
BEHIND = "behind_"  # prefix of the facts of the object behind another one in the same cell
LETTER = "letter_"


@dataclass
class TowerPretrainConfig:
    hidden_size: int = 128
    num_layers: int = 3
    num_heads: int = 4
    patch_size: int = 16
    image_size: int | None = None  # the tower's input side (the processor resizes); None: the scenes' size
    steps: int = 900
    batch_size: int = 64
    lr: float = 2e-3
    locality_weight: float = 1.0   # weight of the attention mass that leaves a token's own grid cell
    seed: int = 0
    threads: int | None = None
    precision: Precision = "auto"  # auto: bf16 autocast only where this CPU does bf16 natively (mllm.precision)


def cell_facts(objects: list[dict]) -> dict[str, str]:
    """The supervised facts of one grid cell's objects: the front one's colour, shape, size and
    texture, its word's letters (`letter_1`, ...), and the same of the one behind it (`behind_*`)."""
    facts: dict[str, str] = {}
    for prefix, obj in zip(("", BEHIND), sorted(objects, key=lambda o: -o["layer"])):
        facts |= {prefix + f: obj[f] for f in OBJECT_FACTS if obj.get(f) is not None}
        facts |= {f"{prefix}{LETTER}{i + 1}": ch for i, ch in enumerate(obj["text"] or "")}
    return facts


class _Scenes:
    """Pixel values and per-patch labels (index 0 = nothing) of one split, held in memory."""

    def __init__(self, scene_dir: Path, split: str, processor, patch: int, vocab: dict[str, list[str]] | None = None):
        truths = list(load_truth(scene_dir / f"{split}_truth.jsonl").values())
        per_cell = [{(o["row"], o["col"]): cell_facts([p for p in t["objects"]
                                                       if (p["row"], p["col"]) == (o["row"], o["col"])])
                     for o in t["objects"]} for t in truths]
        if vocab is None:
            values: dict[str, set[str]] = {}
            for cells in per_cell:
                for facts in cells.values():
                    for fact, value in facts.items():
                        values.setdefault(fact, set()).add(value)
            vocab = {fact: sorted(v) for fact, v in sorted(values.items())}
        self.vocab = vocab
        self.processor = processor
        self.images = torch.cat([  # bytes in memory, 4x less than floats
            pixels_to_bytes(processor(images=[Image.open(scene_dir / t["image"]).convert("RGB")
                                              for t in truths[start:start + 500]], return_tensors="pt")["pixel_values"],
                            processor) for start in range(0, len(truths), 500)])
        size = self.images.shape[-1]
        per_side = size // patch
        self.cells = torch.zeros(len(truths), per_side * per_side, dtype=torch.long)
        self.labels = {fact: torch.zeros(len(truths), per_side * per_side, dtype=torch.long) for fact in vocab}
        for i, truth in enumerate(truths):
            rows, cols = truth["grid"]
            for p in range(per_side * per_side):
                cy, cx = (p // per_side + 0.5) * patch, (p % per_side + 0.5) * patch
                cell = (int(cy * rows // size), int(cx * cols // size))
                self.cells[i, p] = cell[0] * cols + cell[1]
                for fact, value in per_cell[i].get(cell, {}).items():
                    if value in vocab.get(fact, ()):
                        self.labels[fact][i, p] = 1 + vocab[fact].index(value)

    def __len__(self) -> int:
        return len(self.images)

    def pixels(self, index=slice(None)) -> torch.Tensor:
        """The processor's pixel values of scenes `index`."""
        return bytes_to_pixels(self.images[index], self.processor)


def _normalisation(processor) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(torch.tensor(v).view(1, 3, 1, 1) for v in (processor.image_mean, processor.image_std))


def pixels_to_bytes(pixels: torch.Tensor, processor) -> torch.Tensor:
    """The processor's pixel values back as the image bytes (its rescale and normalisation undone)."""
    mean, std = _normalisation(processor)
    return ((pixels * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)


def bytes_to_pixels(images: torch.Tensor, processor) -> torch.Tensor:
    """Image bytes as the processor's pixel values: bit for bit its own (tested on every byte value)."""
    mean, std = _normalisation(processor)
    return (images.float() / 255 - mean) / std


def _features(tower: SiglipVisionModel, scenes: _Scenes, batch: int = 256) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([tower(pixel_values=scenes.pixels(slice(i, i + batch))).last_hidden_state
                          for i in range(0, len(scenes), batch)])


def pretrain_scene_tower(scene_dir: str | Path, out_dir: str | Path, cfg: TowerPretrainConfig | None = None) -> Path:
    """Train a SigLIP-architecture tower on the train split's facts; save it as a Hub-style folder."""
    cfg = cfg or TowerPretrainConfig()
    scene_dir, out_dir = Path(scene_dir), Path(out_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    size = cfg.image_size or json.loads((scene_dir / "scene_config.json").read_text())["image_size"]
    processor = SiglipImageProcessor(size={"height": size, "width": size})
    data = _Scenes(scene_dir, "train", processor, cfg.patch_size)
    torch.manual_seed(cfg.seed)
    tower = SiglipVisionModel(SiglipVisionConfig(
        hidden_size=cfg.hidden_size, intermediate_size=4 * cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, image_size=size, patch_size=cfg.patch_size))
    tower.set_attn_implementation("eager")  # the locality penalty reads the attention weights (not saved)
    heads = nn.ModuleDict({fact: nn.Linear(cfg.hidden_size, 1 + len(data.vocab[fact])) for fact in data.vocab})
    # Each token also names its own grid cell, so positions stay readable from every token.
    heads["cell"] = nn.Linear(cfg.hidden_size, int(data.cells.max()) + 1)
    targets = {**data.labels, "cell": data.cells}
    outside_cell = (data.cells[0][:, None] != data.cells[0][None, :]).float()
    params = list(tower.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(cfg.seed)
    precision = resolve_precision(cfg.precision, "cpu")
    announce("tower pretraining precision", precision)
    autocast = dict(device_type="cpu", dtype=precision.dtype, enabled=precision.precision != "fp32")
    started, losses = time.monotonic(), []
    for _ in (bar := tqdm(range(cfg.steps), desc="tower pretraining", unit="step")):
        idx = torch.randint(len(data), (cfg.batch_size,), generator=generator)
        with torch.autocast(**autocast):
            output = tower(pixel_values=data.pixels(idx), output_attentions=True)
            loss = sum(nn.functional.cross_entropy(head(output.last_hidden_state).flatten(0, 1).float(),
                                                   targets[f][idx].flatten()) for f, head in heads.items())
            leak = torch.stack([(a.float() * outside_cell).sum(-1).mean() for a in output.attentions]).mean()
        loss = loss + cfg.locality_weight * leak
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}", leak=f"{leak.item():.4f}")
    out_dir.mkdir(parents=True, exist_ok=True)
    tower.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / "pretraining.json").write_text(json.dumps({
        "config": asdict(cfg), "precision": str(precision), "vocab": data.vocab,
        "first_loss": losses[0], "last_loss": losses[-1],
        "attention_outside_cell": round(leak.item(), 5),
        "seconds": round(time.monotonic() - started, 1), "losses": [round(v, 4) for v in losses]}, indent=2))
    return out_dir


def probe_tower(tower_dir: str | Path, scene_dir: str | Path, steps: int = 300) -> dict[str, float]:
    """Linear-probe accuracy on val of each supervised fact (where the cell has it) and of presence
    (position) per grid cell, from the frozen tower's tokens mean-pooled per cell;
    `other_cell_colour` reads the next cell's colour from the same tokens, so near 0 means the
    tokens are local and near 1 means they mix."""
    tower_dir, scene_dir = Path(tower_dir), Path(scene_dir)
    tower = SiglipVisionModel.from_pretrained(tower_dir).eval()
    processor = SiglipImageProcessor.from_pretrained(tower_dir)
    patch = tower.config.patch_size
    train = _Scenes(scene_dir, "train", processor, patch)
    val = _Scenes(scene_dir, "val", processor, patch, vocab=train.vocab)

    def pooled(split: _Scenes):
        feats = _features(tower, split)
        cells = split.cells[0].unique()
        x = torch.stack([feats[:, split.cells[0] == c].mean(1) for c in cells], 1)  # (n, cells, d)
        first = torch.stack([(split.cells[0] == c).nonzero()[0, 0] for c in cells])
        y = {f: split.labels[f][:, first] for f in split.vocab}
        y["position"] = (y["colour"] > 0).long()
        y["other_cell_colour"] = y["colour"].roll(-1, dims=1)
        return x.flatten(0, 1), {f: v.flatten() for f, v in y.items()}

    (x_train, y_train), (x_val, y_val) = pooled(train), pooled(val)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    accuracy = {}
    for fact, target in y_train.items():
        probe = nn.Linear(x_train.shape[1], int(target.max()) + 1)
        optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2)
        for _ in range(steps):
            loss = nn.functional.cross_entropy(probe(x_train), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            present = y_val[fact] > 0 if fact != "position" else torch.ones_like(y_val[fact], dtype=torch.bool)
            accuracy[fact] = (probe(x_val).argmax(-1) == y_val[fact])[present].float().mean().item()
    return accuracy
