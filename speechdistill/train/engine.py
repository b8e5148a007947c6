"""The one training loop, on accelerate, for every method (distillation, CTC fine-tuning, ...).

The engine owns devices, precision, data order, optimisation, logging, validation, checkpoints and
resume; a ``Method`` (``train.protocol``) owns the model and the loss.  Teachers live inside methods
and never pass through ``accelerator.prepare``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from speechdistill.config import SEED_RULE, check_ranges
from speechdistill.data.dataset import DataConfig, build_eval_loader, build_train_loader, raise_if_bad
from speechdistill.errors import (
    BadInputError,
    CheckpointError,
    ConfigError,
    SpeechDistillError,
    TrainingError,
)
from speechdistill.train.checkpoint import save_checkpoint, set_rng_state
from speechdistill.train.compile import apply_compile
from speechdistill.train.optim import OptimConfig, build_optimizer, build_scheduler
from speechdistill.train.protocol import Method
from speechdistill.train.resume import check_resumable, config_changes, newest_usable_checkpoint, truncate_log
from speechdistill.train.trackers import TRACKER_RUN_NAME, check_trackers, tracker_names
from speechdistill.utils.io import atomic_dir, atomic_write_json, ensure_dir, writing

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    steps: int = 1000
    grad_accum: int = 1
    # auto: bf16 autocast on a GPU that supports it, fp32 elsewhere. Losses are always fp32.
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    seed: int = 0
    log_every: int = 10
    val_every: int = 0  # 0: validate only at the end
    save_every: int = 0  # 0: checkpoint only at the end (and on SIGINT/SIGTERM)
    keep_checkpoints: int = 2
    # Stop after this many optimizer steps in this invocation (tests of interruption); 0 = no limit.
    stop_after: int = 0
    # Early stopping: finish when this many validations in a row bring no new best of the method's
    # best metric (the best artefact is kept); 0 = train all ``steps``.  Needs val_every and a dev set.
    early_stop_patience: int = 0
    progress: bool = True
    # Experiment trackers (accelerate's): "auto" = tensorboard when its extra is installed, "none", or
    # comma-separated names: tensorboard, wandb, mlflow, comet_ml, aim, clearml, dvclive, swanlab, trackio,
    # all.  TensorBoard events go to OUT_DIR/speechdistill/; train_log.jsonl is written in every case.
    log_with: str = "auto"
    # Count the FLOPs of every training step (forward and backward, teacher included) with torch's
    # FlopCounterMode and log the running total: curves against compute instead of steps. Costs time.
    count_flops: bool = False
    # torch.compile (regional, see train/compile.py): none | student | all (student and teacher).
    compile: Literal["none", "student", "all"] = "none"
    # Training budgets, counted across resumes (0 = none): training ends, as if at ``steps``, once this
    # much audio has been seen (a FLOP budget: FLOPs ~ 6 x MACs per audio second x audio seconds,
    # Kaplan et al. 2020) or this many seconds of wall time have passed in the loop.
    max_audio_seconds: float = 0.0
    max_train_seconds: float = 0.0

    def validate(self) -> None:
        check_ranges(
            "train", self, steps=">=1", grad_accum=">=1", seed=SEED_RULE, log_every=">=1", val_every=">=0",
            save_every=">=0", max_audio_seconds=">=0", max_train_seconds=">=0", keep_checkpoints=">=1", stop_after=">=0", early_stop_patience=">=0",
            hints={"val_every": "0 = at the end only", "save_every": "0 = at the end only",
                   "stop_after": "0 = no limit", "early_stop_patience": "0 = train all steps"},
        )
        if self.early_stop_patience and not self.val_every:
            raise ValueError("train.early_stop_patience needs train.val_every > 0 (validations to count)")
        tracker_names(self.log_with)


@dataclass
class TrainResult:
    step: int
    metrics: dict[str, float]
    out_dir: Path
    interrupted: bool
    artifact: Path | None
    stopped_early: bool = False


class _StopFlag:
    """SIGINT/SIGTERM: finish the current step, save a checkpoint, exit cleanly."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, _frame) -> None:
        if self.signal is not None:  # second signal: give up immediately
            raise KeyboardInterrupt
        self.signal = signum
        log.warning("received signal %d: saving a checkpoint after this step", signum)

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def refuse_sharded_training(distributed_type) -> None:
    """FSDP and DeepSpeed shard parameters and optimizer state across ranks, but checkpoints here are
    written by rank 0 from its own full state dict: they would save a shard.  Students are small
    (< 30M parameters), so DDP (MULTI_GPU) is the supported multi-GPU mode."""
    name = getattr(distributed_type, "value", str(distributed_type))
    if name in ("FSDP", "DEEPSPEED"):
        raise ConfigError(
            f"accelerate distributed_type {name} is not supported: speechdistill checkpoints are written by rank 0 "
            "from an unsharded state dict, which a sharded run does not have. Use distributed_type: MULTI_GPU "
            "(DDP; see launch/accelerate_8gpu.yaml)"
        )


def resolve_mixed_precision(mode: str) -> str:
    if mode != "auto":
        return mode
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def _make_accelerator(train_cfg: TrainConfig, out_dir: Path):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    trackers = tracker_names(train_cfg.log_with)
    check_trackers(trackers)
    # Students may leave parameters unused in a step (e.g. a curriculum stage), so DDP must allow it.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    # accelerate >= 1.x only picks MULTI_CPU (gloo) when told cpu=True; without it, processes started
    # by `accelerate launch --multi_gpu` or torchrun on a machine with no GPU each run alone.
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    return Accelerator(
        cpu=multi_cpu,
        mixed_precision=resolve_mixed_precision(train_cfg.mixed_precision),
        log_with=trackers or None,
        project_dir=str(out_dir),
        kwargs_handlers=[ddp],
    )


@dataclass
class _Position:
    """Where training stands: what a checkpoint records besides weights and optimizer state."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best: float | None = None
    since_best: int = 0  # validations since the last strict improvement (early stopping)
    audio_seconds: float = 0.0
    skipped: int = 0
    flops: float = 0.0  # training FLOPs so far, all processes (train.count_flops)
    train_seconds: float = 0.0  # wall time spent in the loop, over all resumes (the time budget)


class Trainer:
    """The loop, in named steps: ``setup`` (in ``__init__``), ``restore``, ``train_step``, ``validate``,
    ``save_checkpoint``, ``finish``; ``run`` strings them together."""

    def __init__(
        self, method: Method, train_cfg: TrainConfig, optim_cfg: OptimConfig, data_cfg: DataConfig,
        out_dir: Path, run_config: dict | None = None,
    ):
        from accelerate.utils import set_seed

        self.method, self.cfg, self.optim_cfg, self.data_cfg = method, train_cfg, optim_cfg, data_cfg
        self.out_dir = Path(out_dir)
        self.run_config = run_config
        self.accelerator = _make_accelerator(train_cfg, self.out_dir)
        refuse_sharded_training(self.accelerator.distributed_type)
        self.is_main = self.accelerator.is_main_process
        if self.is_main:
            ensure_dir(self.out_dir, "out_dir")
        self.accelerator.wait_for_everyone()
        set_seed(train_cfg.seed, device_specific=True)

        if hasattr(method, "setup"):
            method.setup(self.accelerator.device)
        try:
            model = apply_compile(method, method.build_model(), train_cfg.compile)
        except (ValueError, TypeError) as e:
            if isinstance(e, SpeechDistillError):
                raise
            # Model constructors check their configs with ValueError (e.g. a width the heads do not divide).
            raise ConfigError(f"{getattr(method, 'name', 'method')}: cannot build the model from this config: {e}") from None
        groups = method.param_groups(model, optim_cfg.lr, optim_cfg.weight_decay)
        optimizer = build_optimizer(groups, optim_cfg)
        # Stepped by us once per optimizer step, not prepared: accelerate's wrapper steps it once per
        # process, which would silently shorten warm-up on many GPUs.
        self.scheduler = build_scheduler(optimizer, train_cfg.steps, optim_cfg)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.unwrapped = self.accelerator.unwrap_model(self.model)

        self.loader, self.sampler, skipped_lines, self.dev_loader = self._build_loaders()
        self.batches_per_epoch = len(self.sampler)
        if self.batches_per_epoch == 0:
            raise BadInputError(f"{data_cfg.train_manifest}: no training batches (no usable utterance)")
        self.pos = _Position(skipped=len(skipped_lines))
        self.ckpt_root = self.out_dir / "checkpoints"
        self.log_path = self.out_dir / "train_log.jsonl"
        self.best_metric = getattr(method, "best_metric", None)
        self.dev_postfix: dict[str, str] = {}  # the latest dev loss, shown in the progress bar
        self.last_dev: dict[str, float] = {}

    def _build_loaders(self):
        """(train loader, its resumable sampler, skipped manifest lines, dev loader or None).  A method
        may bring its own data with the same contract (``build_loaders``, e.g. cached encoder features)."""
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        build = getattr(self.method, "build_loaders", None)
        if build is not None:
            return build(self.data_cfg, self.cfg.seed, rank, world)
        d = self.data_cfg
        loader, sampler, skipped = build_train_loader(d, seed=self.cfg.seed, rank=rank, world_size=world,
                                                      device_type=self.accelerator.device.type)
        dev = None
        if d.dev_manifest:
            dev = build_eval_loader(
                d.dev_manifest, d.max_batch_seconds, d.max_batch_size, d.num_workers, d.on_bad_audio,
                d.max_dev_batches, max_item_seconds=d.max_dev_seconds, on_long=d.on_long_dev,
                long_knob="data.max_dev_seconds, data.on_long_dev=error|skip",
            )
        return loader, sampler, skipped, dev

    # -- state ------------------------------------------------------------------------------------

    def restore(self) -> bool:
        """Load the newest intact checkpoint (model, optimizer, scheduler, RNG, data position); see
        ``train.resume`` for what is skipped and what is refused."""
        found = newest_usable_checkpoint(self.ckpt_root, self.accelerator.process_index)
        if found is None:
            log.warning("--resume: no checkpoint under %s, starting from scratch", self.ckpt_root)
            return False
        ckpt, state = found
        changes = config_changes(self.out_dir / "run_config.json", self.run_config)
        check_resumable(ckpt, state, getattr(self.method, "name", "?"), self.accelerator.num_processes,
                        self.unwrapped, self.optimizer, changes)
        self.unwrapped.load_state_dict(state["model"])
        ts = state["trainer_state"]
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(ts["scheduler"])
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"--resume: {ckpt}: the optimizer or scheduler state does not fit this run ({e})") from None
        self.pos = _Position(
            ts["step"], ts["epoch"], ts["batch_in_epoch"], ts.get("best"), ts.get("since_best", 0),
            ts.get("audio_seconds", 0.0), ts.get("skipped", self.pos.skipped), ts.get("flops", 0.0),
            ts.get("train_seconds", 0.0),
        )
        set_rng_state(*state["rng"])
        if self.is_main:
            truncate_log(self.log_path, self.pos.step)
        log.info("resumed from %s (step %d, epoch %d, batch %d)", ckpt, self.pos.step, self.pos.epoch,
                 self.pos.batch_in_epoch)
        return True

    def trainer_state(self) -> dict:
        p = self.pos
        return {
            "step": p.step, "epoch": p.epoch, "batch_in_epoch": p.batch_in_epoch,
            "scheduler": self.scheduler.state_dict(), "best": p.best, "since_best": p.since_best,
            "audio_seconds": p.audio_seconds, "flops": p.flops, "train_seconds": p.train_seconds,
            "skipped": p.skipped, "world_size": self.accelerator.num_processes,
            "method": getattr(self.method, "name", "?"),
        }

    def save_checkpoint(self) -> None:
        save_checkpoint(
            self.ckpt_root, self.pos.step,
            self.unwrapped.state_dict() if self.is_main else None,
            self.optimizer.state_dict() if self.is_main else None,
            self.trainer_state(), self.accelerator.process_index, self.is_main, self.accelerator.wait_for_everyone,
            self.cfg.keep_checkpoints,
        )

    # -- logging and validation -------------------------------------------------------------------

    def write_log(self, record: dict) -> None:
        if self.is_main:
            with writing(self.log_path), open(self.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        self.accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=record.get("step"))

    def validate(self) -> dict[str, float]:
        """Dev metrics (main process); keeps the best artefact when the method names a best metric."""
        metrics: dict[str, float] = {}
        if self.is_main and self.dev_loader is not None:
            was_training = self.unwrapped.training
            self.unwrapped.eval()
            with self.accelerator.autocast():
                metrics = self.method.validate(
                    self.unwrapped, (b.to(self.accelerator.device) for b in self.dev_loader)
                )
            self.unwrapped.train(was_training)
            extra = {"flops": self.pos.flops} if self.cfg.count_flops else {}
            self.write_log({"step": self.pos.step, "split": "dev", **metrics, **extra})
            log.info("step %d dev: %s", self.pos.step, _fmt(metrics))
            if "dev_loss" in metrics:
                self.dev_postfix["dev_loss"] = f"{metrics['dev_loss']:.3f}"
            if self.best_metric is not None and self.best_metric[0] in metrics:
                self._keep_if_best(metrics)
        self.accelerator.wait_for_everyone()
        self.last_dev = metrics
        return metrics

    def patience_exhausted(self) -> bool:
        flag = [bool(self.cfg.early_stop_patience) and self.pos.since_best >= self.cfg.early_stop_patience]
        if self.accelerator.num_processes > 1:  # only the main process validates: every rank must stop together
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(flag, from_process=0)
        return flag[0]

    def save_artifact(self) -> Path:
        """The method's artefact in OUT/model, written whole or not at all (a kill mid-write keeps the
        previous one)."""
        final = self.out_dir / "model"
        with atomic_dir(final) as tmp:
            self.method.save_artifact(self.unwrapped, tmp)
        return final

    def _keep_if_best(self, metrics: dict[str, float]) -> None:
        name, mode = self.best_metric
        value = metrics[name]
        best = self.pos.best
        improved = best is None or (value < best if mode == "min" else value > best)
        self.pos.since_best = 0 if improved else self.pos.since_best + 1
        # Ties go to the later model: early in CTC training WER sits at 1.0 while CER still falls.
        if best is None or (value <= best if mode == "min" else value >= best):
            self.pos.best = value
            self.save_artifact()
            log.info("new best %s=%.4f: wrote %s", name, value, self.out_dir / "model")

    # -- the loop ---------------------------------------------------------------------------------

    def train_step(self, batch, sync: bool) -> tuple[torch.Tensor, dict[str, float]]:
        """Forward and backward of one micro-batch (gradients synchronised only when ``sync``)."""
        if self.cfg.count_flops:
            from speechdistill.train.flops import flop_counter

            with flop_counter() as counter:
                out = self._forward_backward(batch, sync)
            self.pos.flops += counter.get_total_flops() * self.accelerator.num_processes
            return out
        return self._forward_backward(batch, sync)

    def _forward_backward(self, batch, sync: bool) -> tuple[torch.Tensor, dict[str, float]]:
        ctx = contextlib.nullcontext() if sync else self.accelerator.no_sync(self.model)
        with ctx, self.accelerator.autocast():
            loss, metrics = self.method.compute_loss(self.model, batch, self.pos.step)
            if not torch.isfinite(loss):
                raise TrainingError(self._non_finite_message(batch))
            self.accelerator.backward(loss.float() / self.cfg.grad_accum)
        return loss, metrics

    def _non_finite_message(self, batch) -> str:
        where = f"non-finite loss at step {self.pos.step} (utterances {', '.join(batch.ids[:3])}"
        where += ", ...)" if len(batch.ids) > 3 else ")"
        bad = [n for n, p in self.unwrapped.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            return f"{where}: the model's weights are no longer finite ({bad[0]}, ...): lower optim.lr or optim.grad_clip"
        if self.pos.step == 0:
            return (f"{where}, before any update: the inputs or the teacher give non-finite values (check the "
                    "audio with `speechdistill data check` and the teacher's weights), or use mixed_precision=no")
        return f"{where}: lower optim.lr, check the input audio, or use mixed_precision=no"

    def optimizer_step(self):
        grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.optim_cfg.grad_clip)
        # Optional method hook on the clipped, synchronised gradients (WID swaps masked entries' task
        # gradient for a decay toward zero); ``pos.step`` optimizer steps have been taken before this one.
        edit = getattr(self.method, "before_optimizer_step", None)
        if edit is not None:
            edit(self.unwrapped, self.optimizer, self.pos.step)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.pos.step += 1
        return grad_norm

    def run(self, resume: bool = False) -> TrainResult:
        if resume:
            self.restore()
        if self.is_main and self.run_config is not None:
            atomic_write_json(self.out_dir / "run_config.json", self.run_config)
        # accelerator.trackers is empty until init_trackers runs: ask what was configured instead.
        if self.accelerator.log_with:
            self.accelerator.init_trackers(TRACKER_RUN_NAME, config=_flat(self.run_config or {}))
        t0 = time.perf_counter()
        self.stopped_early = False
        self.budget_spent = False
        interrupted, last_metrics = self._loop()
        self.save_checkpoint()
        return self.finish(interrupted, last_metrics, time.perf_counter() - t0)

    def _loop(self) -> tuple[bool, dict[str, float]]:
        cfg, pos = self.cfg, self.pos
        self.model.train()
        pbar = tqdm(
            total=cfg.steps, initial=pos.step, desc=getattr(self.method, "name", "train"),
            disable=not (self.is_main and cfg.progress), dynamic_ncols=True, smoothing=0.1,
        )
        start_step = pos.step
        window_audio, window_t = 0.0, time.perf_counter()
        last_metrics: dict[str, float] = {}
        interrupted = False
        micro = 0
        step_loss = None  # sum of this optimizer step's micro-batch losses
        loop_t0, loop_base = time.perf_counter(), pos.train_seconds
        with pbar, _StopFlag() as stop:
            while pos.step < cfg.steps and not interrupted and not self.stopped_early and not self.budget_spent:
                self.sampler.set_epoch(pos.epoch, pos.batch_in_epoch)
                for batch in self.loader:
                    raise_if_bad(batch, self.data_cfg.on_bad_audio)
                    pos.batch_in_epoch += 1
                    pos.skipped += len(batch.skipped)
                    if len(batch) == 0:
                        continue
                    batch = batch.to(self.accelerator.device)
                    sync = (micro + 1) % cfg.grad_accum == 0
                    loss, metrics = self.train_step(batch, sync)
                    step_loss = loss.detach().float() + (0.0 if step_loss is None else step_loss)
                    micro += 1
                    window_audio += batch.audio_seconds * self.accelerator.num_processes
                    pos.audio_seconds += batch.audio_seconds * self.accelerator.num_processes
                    if not sync:
                        continue
                    grad_norm = self.optimizer_step()
                    pbar.update(1)
                    mean_loss, step_loss = step_loss / cfg.grad_accum, None
                    last_metrics = {"loss": float(mean_loss), **metrics}
                    if pos.step % cfg.log_every == 0 or pos.step == cfg.steps:
                        # The loss of the whole global batch (every micro-batch on every process), so that
                        # N processes and 1 process with grad_accum=N log the same curve (tested).
                        last_metrics["loss"] = float(self.accelerator.reduce(mean_loss, "mean"))
                        now = time.perf_counter()
                        speed = window_audio / max(now - window_t, 1e-9)
                        window_audio, window_t = 0.0, now
                        self.write_log({
                            "step": pos.step, "split": "train", **last_metrics,
                            "lr": self.scheduler.get_last_lr()[0],
                            "grad_norm": float(grad_norm) if grad_norm is not None else None,
                            "audio_sec_per_sec": speed, "epoch": pos.epoch,
                            **({"flops": pos.flops} if cfg.count_flops else {}),
                        })
                        pbar.set_postfix(loss=f"{last_metrics['loss']:.3f}", **self.dev_postfix,
                                         audio_s_per_s=f"{speed:.1f}")
                    if cfg.val_every and pos.step % cfg.val_every == 0 and pos.step < cfg.steps:
                        self.validate()
                        if self.patience_exhausted():
                            log.info("early stop at step %d: no new best %s in %d validations", pos.step,
                                     self.best_metric[0] if self.best_metric else "metric", pos.since_best)
                            self.stopped_early = True
                            break
                    if cfg.save_every and pos.step % cfg.save_every == 0 and pos.step < cfg.steps:
                        self.save_checkpoint()
                    if stop.signal is not None or (cfg.stop_after and pos.step - start_step >= cfg.stop_after):
                        interrupted = True
                        break
                    pos.train_seconds = loop_base + time.perf_counter() - loop_t0
                    if self._budget_spent():
                        log.info("training budget spent at step %d (%.0f s of audio, %.0f s)", pos.step,
                                 pos.audio_seconds, pos.train_seconds)
                        self.budget_spent = True
                        break
                    if pos.step >= cfg.steps:
                        break
                else:
                    pos.epoch += 1
                    pos.batch_in_epoch = 0
                    continue
                # Broke out mid-epoch (finished, stopped or interrupted): a full epoch ending exactly here
                # must still roll over so a resume starts the next epoch.
                if pos.batch_in_epoch >= self.batches_per_epoch:
                    pos.epoch += 1
                    pos.batch_in_epoch = 0
        return interrupted, last_metrics

    def _budget_spent(self) -> bool:
        cfg, pos = self.cfg, self.pos
        flag = [bool((cfg.max_audio_seconds and pos.audio_seconds >= cfg.max_audio_seconds)
                     or (cfg.max_train_seconds and pos.train_seconds >= cfg.max_train_seconds))]
        # Clocks and batch sizes differ between processes: rank 0 decides, so every rank stops together.
        if self.accelerator.num_processes > 1 and (cfg.max_train_seconds or cfg.max_audio_seconds):
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(flag, from_process=0)
        return flag[0]

    def finish(self, interrupted: bool, last_metrics: dict[str, float], elapsed: float) -> TrainResult:
        """Final validation, the artefact (unless a best one was kept) and train_summary.json."""
        final_metrics = dict(last_metrics)
        artifact = None
        pos = self.pos
        if not interrupted:
            # Stopped early: the model was validated at this very step.
            final_metrics.update(self.last_dev if self.stopped_early else self.validate())
            if self.is_main:
                if self.best_metric is None or pos.best is None:
                    self.save_artifact()
                artifact = self.out_dir / "model"
                atomic_write_json(self.out_dir / "train_summary.json", {
                    "step": pos.step, "metrics": final_metrics, "train_seconds": elapsed,
                    "audio_seconds_seen": pos.audio_seconds, "skipped_utterances": pos.skipped,
                    "best": pos.best, "stopped_early": self.stopped_early,
                    "budget_spent": self.budget_spent, "loop_seconds": pos.train_seconds,
                    "num_processes": self.accelerator.num_processes,
                    **({"flops": pos.flops} if self.cfg.count_flops else {}),
                    "mixed_precision": self.accelerator.mixed_precision,
                })
            if pos.skipped:
                log.warning("skipped %d bad utterance(s) in total (see warnings above)", pos.skipped)
        else:
            log.warning("stopped at step %d; continue with --resume", pos.step)
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()
        return TrainResult(pos.step, final_metrics, self.out_dir, interrupted, artifact, self.stopped_early)


def train(
    method: Method,
    train_cfg: TrainConfig,
    optim_cfg: OptimConfig,
    data_cfg: DataConfig,
    out_dir: Path,
    resume: bool = False,
    run_config: dict | None = None,
) -> TrainResult:
    """Train ``method`` to ``train_cfg.steps`` (or until interrupted); see ``Trainer``."""
    return Trainer(method, train_cfg, optim_cfg, data_cfg, out_dir, run_config).run(resume)


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        elif isinstance(v, (int, float, str, bool)):
            out[key] = v
        else:
            out[key] = str(v)
    return out
