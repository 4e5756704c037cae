"""Argument helpers shared by the verbs."""

from __future__ import annotations

from mllm.config import Config, GenerationSettings, load_config


def add_config_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="YAML config (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")


def config_from_args(args, overrides: list[str] | None = None) -> Config:
    return load_config(args.config, args.overrides if overrides is None else overrides)


def add_generation_arguments(parser) -> None:
    """Decoding flags; unset ones keep the model's saved per-task settings."""
    g = parser.add_argument_group("generation")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--max-new-tokens", type=int)
    g.add_argument("--num-beams", type=int)
    g.add_argument("--do-sample", action="store_true", default=None)
    g.add_argument("--temperature", type=float)
    g.add_argument("--top-p", type=float)
    g.add_argument("--repetition-penalty", type=float)


def add_engine_argument(parser) -> None:
    parser.add_argument("--engine", choices=("hf", "vllm"), default="hf",
                        help="hf: transformers generate (default); vllm: vLLM in .venv-vllm (scripts/setup_vllm.sh), "
                             "on the run's stock LLaVA export")


def load_engine(args, device: str | None, settings: list):
    """The captioner `--engine` asks for; `settings` (GenerationSettings) are checked before it loads."""
    if args.engine == "vllm":
        from mllm.infer.backends.vllm import VllmCaptioner

        return VllmCaptioner.load(args.model, device=device, settings=settings)
    from mllm.infer.generate import Captioner

    return Captioner.load(args.model, device=device)


def generation_overrides(args) -> dict:
    names = [f.name for f in GenerationSettings.__dataclass_fields__.values()]
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
