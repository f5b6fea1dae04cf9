"""Fine-tuning with Hugging Face's Trainer: AdamW, cosine annealing, the best epoch kept.

The paper's recipe (Shumailov et al., §4; official code): AdamW at lr 2e-5,
batch 128, cosine annealing to 1e-6, 5 epochs (10 in the second setting),
and "the best-performing model on the original task, evaluated using the
original wikitext2 validation set" is kept: here the epoch with the lowest
validation loss.  The Trainer brings mixed precision on a GPU, several
processes (``torchrun`` / ``accelerate launch``: each process takes
``batch_size / world_size`` blocks of every global batch) and its own
seeding.  The best epoch's weights are kept in memory, not in Trainer
checkpoints (those pickle the optimizer state); the chain saves the chosen
model once, as safetensors.
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import validate
from . import dist


class TrainingDiverged(validate.ParameterError):
    """The loss became NaN or infinite: the learning rate (or precision) cannot train this model."""


def _diverged(what: str, value: float, epoch, learning_rate: float, description: str) -> TrainingDiverged:
    return TrainingDiverged(
        f"{description}: the {what} became {value} in epoch {epoch} with learning_rate={learning_rate:g}; "
        "training cannot recover from that, so the run stopped. Lower the learning rate (or use precision='fp32')")


class BlockDataset(torch.utils.data.Dataset):
    """Blocks of token ids as causal-LM examples (the labels are the inputs; the model shifts them)."""

    def __init__(self, blocks: np.ndarray):
        self.blocks = torch.as_tensor(np.asarray(blocks), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict:
        ids = self.blocks[index]
        return {"input_ids": ids, "labels": ids}


@dataclass
class TrainResult:
    """What fine-tuning did: the loss of every epoch and the one kept."""

    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_validation_loss: float = math.inf
    steps: int = 0

    def to_dict(self) -> dict:
        return {"epochs": self.epochs, "best_epoch": self.best_epoch,
                "best_validation_loss": self.best_validation_loss, "steps": self.steps}


def _callbacks(learning_rate: float = math.nan, description: str = "train"):
    from transformers import TrainerCallback

    class KeepBestEpoch(TrainerCallback):
        """After every epoch's evaluation, copy the weights if the validation loss is the lowest so far.

        A non-finite training or validation loss stops the run at once
        (:class:`TrainingDiverged`): no epoch of such a run can be kept.
        """

        def __init__(self):
            self.result = TrainResult()
            self.best_state = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                raise _diverged("training loss", float(loss), int(round(state.epoch or 0)), learning_rate,
                                description)

        def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
            epoch = int(round(state.epoch or 0))
            loss = float(metrics["eval_loss"])
            if not math.isfinite(loss):
                raise _diverged("validation loss", loss, epoch, learning_rate, description)
            train_losses = [h["loss"] for h in state.log_history if "loss" in h and int(round(h["epoch"])) == epoch]
            self.result.epochs.append({"epoch": epoch, "validation_loss": loss,
                                       "train_loss": train_losses[-1] if train_losses else None})
            if loss < self.result.best_validation_loss:
                self.result.best_validation_loss, self.result.best_epoch = loss, epoch
                self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    class Progress(TrainerCallback):
        """One tqdm bar over the optimisation steps, the last validation loss beside it."""

        def __init__(self, description: str):
            self.description, self.bar = description, None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=state.max_steps, desc=self.description, leave=False, unit="step")

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(1)

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if self.bar is not None:
                self.bar.set_postfix(val_loss=f"{metrics['eval_loss']:.3f}")

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()

    return KeepBestEpoch, Progress


def fine_tune(model, train_blocks: np.ndarray, validation_blocks: np.ndarray, *, epochs: int,
              learning_rate: float, min_learning_rate: float, batch_size: int, weight_decay: float = 0.01,
              seed: int = 0, device: str = "cpu", precision: str = "fp32", eval_batch_size: int = 128,
              progress: bool = True, description: str = "train") -> TrainResult:
    """Train ``model`` in place and leave it holding the best epoch's weights.

    The learning rate follows a cosine from ``learning_rate`` down to
    ``min_learning_rate`` over all steps, without warm-up; no gradient
    clipping (neither the paper nor its code clips).
    """
    from transformers import Trainer, TrainingArguments, default_data_collator
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    validate.positive_int("epochs", epochs)
    _, world_size = dist.rank_and_world()
    if batch_size % world_size:
        raise validate.ParameterError(
            f"batch_size={batch_size} must be a multiple of the number of processes ({world_size})")
    if len(train_blocks) < batch_size:
        raise validate.ParameterError(
            f"{len(train_blocks)} training blocks are fewer than one batch of batch_size={batch_size}")
    KeepBestEpoch, Progress = _callbacks(learning_rate, description)
    keep_best = KeepBestEpoch()
    with tempfile.TemporaryDirectory(prefix="mcutils-trainer-") as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            per_device_train_batch_size=batch_size // world_size,
            per_device_eval_batch_size=max(1, eval_batch_size // world_size),
            num_train_epochs=epochs,
            learning_rate=learning_rate,
            lr_scheduler_type="cosine_with_min_lr",
            lr_scheduler_kwargs={"min_lr": min_learning_rate},
            warmup_steps=0,
            weight_decay=weight_decay,
            max_grad_norm=0.0,
            optim="adamw_torch",
            eval_strategy="epoch",
            logging_strategy="epoch",
            save_strategy="no",
            report_to="none",
            seed=seed,
            data_seed=seed,
            use_cpu=device == "cpu",
            bf16=precision == "bf16",
            fp16=precision == "fp16",
            ddp_backend="gloo" if (device == "cpu" and world_size > 1) else None,
            dataloader_drop_last=False,
            remove_unused_columns=False,
            disable_tqdm=True,
            log_level="error",
        )
        trainer = Trainer(model=model, args=args, train_dataset=BlockDataset(train_blocks),
                          eval_dataset=BlockDataset(validation_blocks), data_collator=default_data_collator,
                          callbacks=[keep_best] + ([Progress(description)] if progress else []))
        for default in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(default)
        output = trainer.train()
    if keep_best.best_state is None:  # no evaluation ran (cannot happen with eval_strategy="epoch")
        raise RuntimeError(f"{description}: no epoch was evaluated, so none can be kept")
    model.load_state_dict(keep_best.best_state)
    model.eval()
    keep_best.result.steps = int(output.global_step)
    return keep_best.result
