"""Training on the HF Trainer: one function per run, one small Trainer subclass that trains the
stage's objective (mllm.train.objectives) and saves run folders.

The same call runs single-process, under `torchrun`, or under DeepSpeed ZeRO-2/3 (set
`train.deepspeed` to a JSON config from configs/deepspeed/). Checkpoints hold the config, the
trainable weights (safetensors) and the Trainer's optimizer/scheduler/RNG state, so a rerun of
the same command resumes exactly where it stopped.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments, set_seed
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import get_last_checkpoint

from mllm.config import Config
from mllm.data.dataset import CaptionDataset
from mllm.data.packing import PackedCollator
from mllm.data.records import read_records
from mllm.errors import UsageError
from mllm.model.build import Built, build_captioner
from mllm.model.recipes import stage_recipe
from mllm.precision import Choice, announce, resolve_dtype, resolve_precision
from mllm.run_folder import (LOSS_PLOT_FILE, WEIGHTS_FILE, gather_persisted_state, load_objective_weights,
                             load_weights, save_objective_weights, save_run, write_train_log)
from mllm.train.curves import plot_loss
from mllm.train.objectives import Objective, build_objective
from mllm.train.validation import CaptionValidation, Scorer

log = logging.getLogger(__name__)


class EpochLengthGroupedSampler(LengthGroupedSampler):
    """Length-grouped order that depends only on (seed, epoch), so resuming replays it exactly."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return super().__iter__()


class CaptionTrainer(Trainer):
    """Trains a stage's objective; saves and loads mllm run folders instead of whole
    `save_pretrained` models."""

    def __init__(self, *args, built: Built, objective: Objective, run_config: Config, lengths: list[int], **kwargs):
        super().__init__(*args, model=objective.model, **kwargs)
        self.built, self.objective, self.run_config, self.lengths = built, objective, run_config, lengths
        self._heads_state: dict | None = None

    def _get_train_sampler(self, train_dataset=None):
        if self.args.train_sampling_strategy == "group_by_length":
            batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
            return EpochLengthGroupedSampler(batch, self.lengths, self.args.seed)
        return super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset):
        return torch.utils.data.SequentialSampler(eval_dataset)  # order does not change an evaluation loss

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        # Under ZeRO-3 every rank must join the gather. Gather only the weights a run keeps: the
        # Trainer's own path consolidates the whole model, and with PEFT drops frozen `persist`
        # weights (those loaded from `init_from`).
        if not (self.is_deepspeed_enabled and self.accelerator.state.deepspeed_plugin.hf_ds_config.is_zero3()):
            return super().save_model(output_dir, _internal_call)
        state = gather_persisted_state(self.built.model, self.built.persist, keep=self.args.should_save)
        if self.objective.heads:
            self._heads_state = gather_persisted_state(self.objective.model, set(self.objective.heads()),
                                                       keep=self.args.should_save)
        self._save(output_dir, state_dict=state)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if self.args.should_save:
            folder = save_run(self.built, self.run_config, output_dir or self.args.output_dir, state_dict)
            if self.objective.heads:
                save_objective_weights(folder, self._heads_state or self.objective.heads())
        self._heads_state = None

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        load_weights(self.built.model, Path(resume_from_checkpoint) / WEIGHTS_FILE)
        if self.objective.load_heads:
            self.objective.load_heads(load_objective_weights(resume_from_checkpoint))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.objective.figures and "loss" in logs:
            logs.update(self.objective.figures())
        super().log(logs, start_time)


def training_device(cfg: Config) -> str:
    """'cuda' when there is a GPU and `train.use_cpu` is off, else 'cpu'."""
    return "cuda" if torch.cuda.is_available() and not cfg.train.use_cpu else "cpu"


def loader_workers(cfg: Config, *datasets: CaptionDataset | None) -> int:
    """`train.num_workers`; `auto`: when the data has clips, 2 (1 on a one-core machine), so frames
    decode in DataLoader workers, not in the training process; else 0."""
    if cfg.train.num_workers != "auto":
        return cfg.train.num_workers
    if not any(d is not None and d.has_clips for d in datasets):
        return 0
    return min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def training_arguments(cfg: Config, precision: Choice, num_workers: int | None = None) -> TrainingArguments:
    """`num_workers`: the DataLoader's (default: `loader_workers(cfg)`, with no data known)."""
    t = cfg.train
    return TrainingArguments(
        output_dir=t.output_dir,
        max_steps=t.max_steps,
        num_train_epochs=t.epochs,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio,
        lr_scheduler_type=t.scheduler,
        seed=t.seed,
        data_seed=t.seed,
        bf16=precision.precision == "bf16",
        fp16=precision.precision == "fp16",
        max_grad_norm=t.max_grad_norm,
        gradient_checkpointing=t.gradient_checkpointing,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
        logging_steps=t.logging_steps,
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        eval_strategy="steps" if cfg.data.eval and t.eval_steps else "no",
        eval_steps=t.eval_steps,
        dataloader_num_workers=loader_workers(cfg) if num_workers is None else num_workers,
        deepspeed=t.deepspeed,
        use_cpu=training_device(cfg) == "cpu",
        report_to=t.report_to,
        remove_unused_columns=False,
        disable_tqdm=False,
    )


def _place_rank() -> None:
    """Under torchrun, put this rank on its own GPU before anything is built: bitsandbytes loads a
    4-bit model on the current device, and the model is assembled before the Trainer starts."""
    if torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())


def _eval_dataset(cfg: Config, built: Built) -> CaptionDataset | None:
    if not (cfg.data.eval and cfg.train.eval_steps):
        return None
    records, skipped = read_records(cfg.data.eval, cfg.data.format, cfg.data.image_root)
    dataset = CaptionDataset(records, built.processor, cfg.data.tasks, skipped, cfg.data.video,
                             clips=stage_recipe(cfg.train.stage).clips)
    if not len(dataset):
        raise ValueError(f"{cfg.data.eval}: no usable evaluation samples ({skipped.summary()})")
    return dataset


def _validation(cfg: Config, built: Built, scorer: Scorer | None) -> CaptionValidation | None:
    if not (cfg.train.validation_steps and cfg.data.eval):
        return None
    from mllm.infer.backends.hf import Captioner
    from mllm.infer.engine import CaptionEngine, EngineConfig
    from mllm.infer.sources import SourceItem

    records, _ = read_records(cfg.data.eval, cfg.data.format, cfg.data.image_root, cfg.train.validation_samples)
    tasks = tuple(cfg.data.tasks)
    items = [SourceItem(r.key, r.image, None, ref=r.source, video=r.video, start=r.start, end=r.end)
             for r in records]

    def caption(_records) -> dict[str, list[str | None]]:
        engine = CaptionEngine(Captioner(built.model, built.processor, video=cfg.data.video), cfg.generation,
                               EngineConfig(tasks, num_workers=0))
        rows = engine.caption_items(items)
        return {task: [row[f"{task}_caption"] for row in rows] for task in tasks}

    return CaptionValidation(records, caption, cfg.train.validation_steps, cfg.train.output_dir, scorer)


def train(cfg: Config, callbacks: list | None = None, scorer: Scorer | None = None) -> Path:
    """Run one training stage; returns the run folder (loadable with `load_captioner`). `scorer`
    adds figures to the caption validation (`train.validation_steps`)."""
    out = Path(cfg.train.output_dir)
    set_seed(cfg.train.seed)
    if not cfg.data.train:
        raise ValueError("data.train is not set")
    if cfg.train.packing and not stage_recipe(cfg.train.stage).packs:
        raise UsageError(f"train.stage={cfg.train.stage} trains on unpacked batches: set train.packing=false")
    precision = resolve_precision(cfg.train.precision, training_device(cfg))
    announce("training precision", precision)
    _place_rank()
    # Build before TrainingArguments: DeepSpeed partitions the assembled model at initialize().
    dtype = resolve_dtype(cfg.model.llm.dtype, training_device(cfg), precision=precision).dtype
    built = build_captioner(cfg, out, dtype=dtype,
                            gradient_checkpointing=cfg.train.gradient_checkpointing)
    records, skipped = read_records(cfg.data.train, cfg.data.format, cfg.data.image_root, cfg.data.max_records)
    dataset = CaptionDataset(records, built.processor, cfg.data.tasks, skipped, cfg.data.video,
                             clips=stage_recipe(cfg.train.stage).clips)
    log.warning("training on %d samples from %d records; %s", len(dataset), len(records), skipped.summary())
    if not len(dataset):
        raise ValueError(f"{cfg.data.train}: no usable training samples ({skipped.summary()})")
    eval_dataset = _eval_dataset(cfg, built)
    args = training_arguments(cfg, precision, loader_workers(cfg, dataset, eval_dataset))
    objective = build_objective(built, dataset, cfg.train.stage)
    validation = _validation(cfg, built, scorer) if objective.validates else None
    collate = PackedCollator() if cfg.train.packing else built.processor.collate
    trainer = CaptionTrainer(args=args, train_dataset=dataset, eval_dataset=eval_dataset,
                             data_collator=collate, built=built, objective=objective, run_config=cfg,
                             lengths=dataset.lengths, callbacks=[*(callbacks or []), *filter(None, [validation])])
    checkpoint = get_last_checkpoint(str(out)) if cfg.train.resume and out.is_dir() else None
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(out))
    if args.should_save:
        history = trainer.state.log_history
        failures = {f"{kind}_decode_failures": n for kind, n in dataset.decode_failures_by_kind().items()}
        write_train_log(out, {"log_history": history, "skipped": dict(skipped.counts), **failures,
                              "precision": precision.precision, "precision_reason": precision.reason})
        plot_loss(history, out / LOSS_PLOT_FILE, title=f"{cfg.train.stage} loss")
    return out
