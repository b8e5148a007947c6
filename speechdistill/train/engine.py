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

from speechdistill.data.dataset import DataConfig, build_eval_loader, build_train_loader, raise_if_bad
from speechdistill.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, set_rng_state
from speechdistill.train.optim import OptimConfig, build_optimizer, build_scheduler
from speechdistill.train.protocol import Method
from speechdistill.utils.io import atomic_write_json

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
    progress: bool = True

    def validate(self) -> None:
        if self.steps < 1:
            raise ValueError("train.steps must be >= 1")
        if self.grad_accum < 1:
            raise ValueError("train.grad_accum must be >= 1")


@dataclass
class TrainResult:
    step: int
    metrics: dict[str, float]
    out_dir: Path
    interrupted: bool
    artifact: Path | None


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


def resolve_mixed_precision(mode: str) -> str:
    if mode != "auto":
        return mode
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def _make_accelerator(train_cfg: TrainConfig, out_dir: Path):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    trackers = []
    with contextlib.suppress(ImportError):
        import tensorboard  # noqa: F401

        trackers.append("tensorboard")
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


def train(
    method: Method,
    train_cfg: TrainConfig,
    optim_cfg: OptimConfig,
    data_cfg: DataConfig,
    out_dir: Path,
    resume: bool = False,
    run_config: dict | None = None,
) -> TrainResult:
    from accelerate.utils import set_seed

    out_dir = Path(out_dir)
    accelerator = _make_accelerator(train_cfg, out_dir)
    is_main = accelerator.is_main_process
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    set_seed(train_cfg.seed, device_specific=True)

    if hasattr(method, "setup"):
        method.setup(accelerator.device)
    model = method.build_model()
    groups = method.param_groups(model, optim_cfg.lr, optim_cfg.weight_decay)
    optimizer = build_optimizer(groups, optim_cfg)
    scheduler = build_scheduler(optimizer, train_cfg.steps, optim_cfg)
    # The scheduler is stepped by us once per optimizer step, not prepared: accelerate's wrapper steps
    # it once per process, which would silently shorten warm-up on many GPUs.
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)

    loader, sampler, skipped_lines = build_train_loader(
        data_cfg, seed=train_cfg.seed, rank=accelerator.process_index, world_size=accelerator.num_processes
    )
    batches_per_epoch = len(sampler)
    if batches_per_epoch == 0:
        raise ValueError(f"{data_cfg.train_manifest}: no training batches")

    ckpt_root = out_dir / "checkpoints"
    step, epoch, batch_in_epoch = 0, 0, 0
    best: float | None = None
    audio_seconds_total = 0.0
    skipped_total = len(skipped_lines)
    if resume:
        ckpt = latest_checkpoint(ckpt_root)
        if ckpt is None:
            log.warning("--resume: no checkpoint under %s, starting from scratch", ckpt_root)
        else:
            state = load_checkpoint(ckpt, accelerator.process_index)
            unwrapped.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            ts = state["trainer_state"]
            scheduler.load_state_dict(ts["scheduler"])
            step, epoch, batch_in_epoch = ts["step"], ts["epoch"], ts["batch_in_epoch"]
            best = ts.get("best")
            audio_seconds_total = ts.get("audio_seconds", 0.0)
            skipped_total = ts.get("skipped", skipped_total)
            set_rng_state(*state["rng"])
            log.info("resumed from %s (step %d, epoch %d, batch %d)", ckpt, step, epoch, batch_in_epoch)

    if is_main and run_config is not None:
        atomic_write_json(out_dir / "run_config.json", run_config)
    if accelerator.trackers:
        accelerator.init_trackers("speechdistill", config=_flat(run_config or {}))

    best_metric = getattr(method, "best_metric", None)
    log_path = out_dir / "train_log.jsonl"
    dev_loader = None
    if data_cfg.dev_manifest:
        dev_loader = build_eval_loader(
            data_cfg.dev_manifest, data_cfg.max_batch_seconds, data_cfg.max_batch_size,
            data_cfg.num_workers, data_cfg.on_bad_audio, data_cfg.max_dev_batches,
        )

    def trainer_state() -> dict:
        return {
            "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "scheduler": scheduler.state_dict(),
            "best": best, "audio_seconds": audio_seconds_total, "skipped": skipped_total,
            "world_size": accelerator.num_processes, "method": getattr(method, "name", "?"),
        }

    def checkpoint() -> None:
        save_checkpoint(
            ckpt_root, step,
            unwrapped.state_dict() if is_main else None,
            optimizer.state_dict() if is_main else None,
            trainer_state(), accelerator.process_index, is_main, accelerator.wait_for_everyone,
            train_cfg.keep_checkpoints,
        )

    def write_log(record: dict) -> None:
        if is_main:
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        accelerator.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=record.get("step"))

    dev_postfix: dict[str, str] = {}  # the latest dev loss, shown in the progress bar

    def run_validation() -> dict[str, float]:
        nonlocal best
        metrics: dict[str, float] = {}
        if is_main and dev_loader is not None:
            was_training = unwrapped.training
            unwrapped.eval()
            with accelerator.autocast():
                metrics = method.validate(unwrapped, (b.to(accelerator.device) for b in dev_loader))
            unwrapped.train(was_training)
            write_log({"step": step, "split": "dev", **metrics})
            log.info("step %d dev: %s", step, _fmt(metrics))
            if "dev_loss" in metrics:
                dev_postfix["dev_loss"] = f"{metrics['dev_loss']:.3f}"
            if best_metric is not None and best_metric[0] in metrics:
                name, mode = best_metric
                value = metrics[name]
                # Ties go to the later model: early in CTC training WER sits at 1.0 while CER still falls.
                if best is None or (value <= best if mode == "min" else value >= best):
                    best = value
                    method.save_artifact(unwrapped, out_dir / "model")
                    log.info("new best %s=%.4f: wrote %s", name, value, out_dir / "model")
        accelerator.wait_for_everyone()
        return metrics

    model.train()
    pbar = tqdm(
        total=train_cfg.steps, initial=step, desc=getattr(method, "name", "train"),
        disable=not (is_main and train_cfg.progress), dynamic_ncols=True, smoothing=0.1,
    )
    start_step = step
    t0 = time.perf_counter()
    window_audio, window_t = 0.0, time.perf_counter()
    last_metrics: dict[str, float] = {}
    interrupted = False
    micro = 0
    accum = train_cfg.grad_accum
    with _StopFlag() as stop:
        while step < train_cfg.steps and not interrupted:
            sampler.set_epoch(epoch, batch_in_epoch)
            for batch in loader:
                raise_if_bad(batch, data_cfg.on_bad_audio)
                batch_in_epoch += 1
                if batch.skipped:
                    skipped_total += len(batch.skipped)
                if len(batch) == 0:
                    continue
                batch = batch.to(accelerator.device)
                sync_now = (micro + 1) % accum == 0
                ctx = contextlib.nullcontext() if sync_now else accelerator.no_sync(model)
                with ctx, accelerator.autocast():
                    loss, metrics = method.compute_loss(model, batch, step)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(
                            f"non-finite loss at step {step} (batch {batch.ids[:3]}...): lower optim.lr, "
                            "check the input audio, or use mixed_precision=no"
                        )
                    accelerator.backward(loss.float() / accum)
                micro += 1
                window_audio += batch.audio_seconds * accelerator.num_processes
                if not sync_now:
                    continue
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), optim_cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                pbar.update(1)
                last_metrics = {"loss": float(loss.detach()), **metrics}
                if step % train_cfg.log_every == 0 or step == train_cfg.steps:
                    now = time.perf_counter()
                    speed = window_audio / max(now - window_t, 1e-9)
                    audio_seconds_total += window_audio
                    window_audio, window_t = 0.0, now
                    record = {
                        "step": step, "split": "train", **last_metrics,
                        "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm) if grad_norm is not None else None,
                        "audio_sec_per_sec": speed, "epoch": epoch,
                    }
                    write_log(record)
                    pbar.set_postfix(loss=f"{last_metrics['loss']:.3f}", **dev_postfix, audio_s_per_s=f"{speed:.1f}")
                if train_cfg.val_every and step % train_cfg.val_every == 0 and step < train_cfg.steps:
                    run_validation()
                if train_cfg.save_every and step % train_cfg.save_every == 0 and step < train_cfg.steps:
                    checkpoint()
                if stop.signal is not None or (train_cfg.stop_after and step - start_step >= train_cfg.stop_after):
                    interrupted = True
                    break
                if step >= train_cfg.steps:
                    break
            else:
                epoch += 1
                batch_in_epoch = 0
                continue
            # Broke out mid-epoch (finished, stopped or interrupted): a full epoch ending exactly here
            # must still roll over so a resume starts the next epoch.
            if batch_in_epoch >= batches_per_epoch:
                epoch += 1
                batch_in_epoch = 0
    pbar.close()

    checkpoint()
    final_metrics = dict(last_metrics)
    artifact = None
    if not interrupted:
        final_metrics.update(run_validation())
        if is_main:
            if best_metric is None or best is None:
                method.save_artifact(unwrapped, out_dir / "model")
            artifact = out_dir / "model"
        elapsed = time.perf_counter() - t0
        if is_main:
            summary = {
                "step": step, "metrics": final_metrics, "train_seconds": elapsed,
                "audio_seconds_seen": audio_seconds_total, "skipped_utterances": skipped_total,
                "best": best, "num_processes": accelerator.num_processes,
                "mixed_precision": accelerator.mixed_precision,
            }
            atomic_write_json(out_dir / "train_summary.json", summary)
        if skipped_total:
            log.warning("skipped %d bad utterance(s) in total (see warnings above)", skipped_total)
    else:
        log.warning("stopped at step %d; continue with --resume", step)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(step, final_metrics, out_dir, interrupted, artifact)


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
