"""The one training engine: members, joint ensembles and fusion networks all go through `fit`.

Read top to bottom: set up (device, seeds, loaders, optimizers, schedule), resume from the last
complete epoch if its checkpoint was made with the same settings, then per epoch: a discriminator
step (when the model has one) and a generator step per batch, validation, history, checkpoint.
Checkpoints hold the full state (networks, optimizers, schedulers, AMP scaler, RNG, history), are
written atomically and load with weights_only=True, so a resumed run equals one that never stopped.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from seg_p2p import distributed
from seg_p2p.atomic import check_writable, remove_stale_temps_under, save_torch, write_bytes, write_json, write_text
from seg_p2p.config import Config
from seg_p2p.errors import UserError
from seg_p2p.models import build_member, parameter_counts
from seg_p2p.models.member import SegModel
from seg_p2p.tracking import Tracker, flatten

SOURCE = Path(__file__).resolve().parent  # seg_p2p's own code: part of every run's identity
LOG_EVERY = 10  # steps between host syncs (progress bar, finiteness check); never per step


class TrainingDiverged(Exception):
    """A loss became NaN or infinite: the run stops, the last good checkpoint stays."""


def select_device(name: str) -> torch.device:
    if name != "auto":
        if name == "cuda" and not torch.cuda.is_available():
            raise UserError("train.device: cuda is not available on this machine; set train.device: auto or cpu")
        if name == "mps" and not torch.backends.mps.is_available():
            raise UserError("train.device: mps is not available on this machine; set train.device: auto or cpu")
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def check_seed(seed: int) -> None:
    if not 0 <= seed < 2**32:
        raise UserError(f"--seed {seed}: a seed must be in 0..{2**32 - 1}; pick another")


def seed_everything(seed: int, deterministic: bool) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.backends.cudnn.benchmark = not deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    # Deterministic mode also NaN-fills every new tensor (3-15% of a CPU step); results do not depend on it.
    torch.utils.deterministic.fill_uninitialized_memory = False


def linear_decay(n_epochs: int, n_epochs_decay: int):
    """The pix2pix schedule: constant for n_epochs, then linearly to zero over n_epochs_decay."""
    return lambda epoch: 1.0 - max(0, epoch + 1 - n_epochs) / float(n_epochs_decay + 1)


def fingerprint(*settings, inputs: list[Path] = ()) -> str:
    """Identity of a training run: its settings, seg_p2p's source and the bytes of its input files.

    A checkpoint is resumed only into the same identity. DVC keeps (`persist`) a stage's outputs so a
    killed run resumes; when it reruns a stage because code, data or a member changed, the finished
    checkpoint left there must not be taken for that run's result, so the run starts over.
    """
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in sorted(SOURCE.rglob("*.py")):
        digest.update(path.relative_to(SOURCE).as_posix().encode() + path.read_bytes())
    for path in inputs:
        with open(path, "rb") as file:
            digest.update(hashlib.file_digest(file, "sha256").digest())
    return digest.hexdigest()[:16]


def to_device(batch: dict, device: torch.device, channels_last: bool) -> dict:
    moved = {}
    for key, value in batch.items():
        if torch.is_tensor(value):
            value = value.to(device, non_blocking=True)
            if channels_last and value.dim() == 4:
                value = value.contiguous(memory_format=torch.channels_last)
        moved[key] = value
    return moved


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: checkpoint not found; train the model first (`dvc repro train`)") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is a user-facing error
        raise UserError(f"{path}: not a readable seg_p2p checkpoint ({type(exc).__name__}); "
                        "delete it and train again") from None


def load_weights(model: SegModel, path: Path, palette: np.ndarray | None = None) -> dict:
    """Load a checkpoint's weights into `model`; a checkpoint of another model or class count is an error.

    `palette`: the dataset's class colours; a checkpoint that records other classes is refused (the rgb
    head has no class-sized weights, so its state dict alone cannot tell)."""
    state = load_checkpoint(path)
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise UserError(f"{path}: not a seg_p2p checkpoint (no model weights in it); point --checkpoint at a "
                        "checkpoints/best.pt written by `seg-p2p train`")
    if palette is not None and state.get("palette") is not None and \
            np.asarray(state["palette"]).tolist() != np.asarray(palette).tolist():
        raise UserError(f"{path}: checkpoint was trained on another dataset spec ({len(state['palette'])} "
                        f"classes; this dataset: {len(palette)}, or other colours); train on this dataset or "
                        "point --checkpoint at the right one")
    try:
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError) as exc:
        detail = str(exc).splitlines()[0][:160]
        raise UserError(f"{path}: checkpoint does not fit this model ({detail}); it was made for another "
                        "member, architecture or class count: point --checkpoint at the right one") from None
    return state


class Interrupted(KeyboardInterrupt):
    """SIGTERM is handled like Ctrl-C: stop, keep the last checkpoint, mark the MLflow run KILLED."""


def _raise_interrupted(signum, frame):
    exc = Interrupted(f"signal {signum}")
    exc.signum = signum  # the CLI exits 128 + signum
    raise exc


def optimizer_step(optimizer, losses: dict, scaler) -> None:
    total = sum(value for key, value in losses.items() if key.startswith("loss_"))
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(total).backward()
    scaler.step(optimizer)


def train_step(model: SegModel, batch: dict, optimizers: dict, scaler, autocast) -> dict[str, torch.Tensor]:
    """One reference pix2pix iteration: forward G, update D on (real, fake.detach()), update G."""
    with autocast():
        output = model(batch)
    stats = {}
    if "discriminator" in optimizers:
        with autocast():
            d_losses = model.discriminator_losses(batch, output)
        optimizer_step(optimizers["discriminator"], d_losses, scaler)
        stats.update(d_losses)
    with autocast():
        g_losses = model.generator_losses(batch, output)
    optimizer_step(optimizers["generator"], g_losses, scaler)
    scaler.update()
    stats.update(g_losses)
    return {key: value.detach().float() for key, value in stats.items()}


@torch.no_grad()
def evaluate_miou(model: SegModel, loader: DataLoader, device, channels_last: bool, num_classes: int) -> float:
    from seg_p2p.metrics import SegmentationScorer

    model.eval()
    scorer = SegmentationScorer(num_classes)
    for batch in loader:
        batch = to_device(batch, device, channels_last)
        pred = model.probabilities(model(batch)).argmax(1)
        scorer.update(pred.cpu(), batch["mask"].cpu())
    scores, _ = scorer.compute()
    return scores["miou"]


def sample_grid(model: SegModel, batch: dict, palette: np.ndarray) -> bytes:
    """PNG rows of photo | truth | prediction, label maps in palette colours (void black)."""
    from PIL import Image

    model.eval()
    with torch.no_grad():
        pred = model.probabilities(model(batch)).argmax(1).cpu().numpy()
    colours = np.vstack([palette, np.zeros((256 - len(palette), 3), np.uint8)])
    photos = ((batch["photo"].float().cpu().numpy().transpose(0, 2, 3, 1) + 1) * 127.5).clip(0, 255)
    rows = [np.hstack([photo.astype(np.uint8), colours[truth], colours[guess]])
            for photo, truth, guess in zip(photos, batch["mask"].cpu().numpy(), pred)]
    buffer = io.BytesIO()
    Image.fromarray(np.vstack(rows)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_history(path: Path, history: list[dict]) -> None:
    columns = list(dict.fromkeys(key for row in history for key in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    write_text(path, text.getvalue())


def fit(model: SegModel, train_set, val_set, cfg: Config, seed: int, out_dir: Path, tracker: Tracker,
        identity: str, palette: np.ndarray, num_classes: int, resume: bool = True) -> dict:
    """Train `model` on `train_set`; validate on `val_set` (None: no validation, best = last)."""
    train_cfg = cfg.train
    device = select_device(train_cfg.device)
    rank = distributed.init(device.type)
    if device.type == "cuda" and rank.world > 1:
        device = torch.device("cuda", rank.local_rank)
        torch.cuda.set_device(device)
    seed_everything(seed, train_cfg.deterministic)
    memory_format = torch.channels_last if train_cfg.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    optimizers = model.optimizers()
    total_epochs = train_cfg.n_epochs + train_cfg.n_epochs_decay
    schedulers = {name: torch.optim.lr_scheduler.LambdaLR(opt, linear_decay(train_cfg.n_epochs,
                                                                              train_cfg.n_epochs_decay))
                  for name, opt in optimizers.items()}
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(train_cfg.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=train_cfg.precision == "fp16" and device.type == "cuda")
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else nullcontext
    pin = device.type == "cuda"
    val_loader = val_set and DataLoader(val_set, batch_size=train_cfg.batch_size, num_workers=train_cfg.num_workers,
                                        pin_memory=pin)

    ckpt_dir = out_dir / "checkpoints"
    last_path, best_path = ckpt_dir / "last.pt", ckpt_dir / "best.pt"
    remove_stale_temps_under(out_dir)  # temp files of a killed run: never outputs, never read
    start_epoch, best_miou, history, train_seconds = 0, -1.0, [], 0.0
    if resume and last_path.exists():
        state = load_checkpoint(last_path)
        if state.get("identity") == identity:
            model.load_state_dict(state["model"])
            for name, opt in optimizers.items():
                opt.load_state_dict(state["optimizers"][name])
                schedulers[name].load_state_dict(state["schedulers"][name])
            scaler.load_state_dict(state["scaler"])
            torch.set_rng_state(state["rng"])
            start_epoch, best_miou, history = state["epoch"], state["best_miou"], state["history"]
            train_seconds = state["train_seconds"]
            print(f"resuming from {last_path} after epoch {start_epoch}", file=sys.stderr)
        else:
            print(f"{last_path} was made with other settings, code or inputs; starting over", file=sys.stderr)
    distributed.wrap(model, rank, train_cfg.sync_batchnorm)
    step_model = torch.compile(model) if train_cfg.compile else model

    steps_per_epoch = math.ceil(len(train_set) / train_cfg.batch_size)
    previous_handler = signal.signal(signal.SIGTERM, _raise_interrupted)
    collapse_streak = torch.zeros((), device=device)
    collapsed = False
    try:
        for epoch in range(start_epoch, total_epochs):
            train_set.set_epoch(epoch)
            order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
            shard, batch_size = distributed.shard(order.tolist(), rank, train_cfg.batch_size)
            loader = DataLoader(train_set, batch_size=batch_size, sampler=shard, num_workers=train_cfg.num_workers,
                                pin_memory=pin)
            step_model.train()
            sums: dict[str, torch.Tensor] = {}
            counts: dict[str, int] = {}  # per key: a diagnostic may be measured on some steps only
            started = time.perf_counter()
            bar = tqdm(loader, desc=f"{tracker.run_name} epoch {epoch + 1}/{total_epochs}", leave=False,
                       file=sys.stderr, dynamic_ncols=True)
            for i, batch in enumerate(bar, 1):
                stats = train_step(step_model, to_device(batch, device, train_cfg.channels_last), optimizers,
                                   scaler, autocast)
                for key, value in stats.items():
                    sums[key] = sums.get(key, 0.0) + value
                    counts[key] = counts.get(key, 0) + 1
                d_losses = [value for key, value in stats.items() if key.split(".")[0] == "loss_d"]
                if d_losses:
                    collapse_streak = (collapse_streak + 1) * (torch.stack(d_losses).min() < 1e-3)
                if i % LOG_EVERY == 0 or i == len(loader):
                    means = {key: (value / counts[key]).item() for key, value in sums.items()}
                    bad = [key for key, value in means.items() if not math.isfinite(value)]
                    if bad:
                        kept = (f"the last good checkpoint is {last_path} (epoch {epoch})" if epoch > 0
                                else "no checkpoint was written")
                        raise TrainingDiverged(f"{tracker.run_name}: {bad[0]} is {means[bad[0]]} at epoch "
                                               f"{epoch + 1}, step {i}; {kept}; lower the learning rate or "
                                               "check the data")
                    bar.set_postfix({key.removeprefix("loss_"): f"{value:.3g}" for key, value in means.items()})
                    if collapse_streak.item() >= train_cfg.collapse_patience and not collapsed:
                        collapsed = True
                        print(f"seg-p2p: warning: {tracker.run_name}: discriminator loss < 1e-3 for "
                              f"{train_cfg.collapse_patience} steps at epoch {epoch + 1}: collapse flagged",
                              file=sys.stderr)
            epoch_seconds = time.perf_counter() - started
            train_seconds += epoch_seconds
            row = {"epoch": epoch + 1, "lr": schedulers["generator"].get_last_lr()[0],
                   **{key: distributed.all_reduce_mean(value / counts[key], rank).item()
                      for key, value in sums.items()},
                   "seconds": epoch_seconds}
            for scheduler in schedulers.values():
                scheduler.step()
            if not rank.is_main:
                continue  # only rank 0 validates, logs and writes
            is_last = epoch + 1 == total_epochs
            if val_loader is not None and ((epoch + 1) % train_cfg.val_every == 0 or is_last):
                with distributed.unwrapped(model):
                    row["val_miou"] = evaluate_miou(model, val_loader, device, train_cfg.channels_last,
                                                    num_classes)
            history.append(row)
            tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch + 1)
            if (epoch + 1) % train_cfg.sample_every == 0 or is_last:
                sample_set = val_set or train_set
                batch = next(iter(DataLoader(sample_set, batch_size=min(4, len(sample_set)))))
                grid = out_dir / "samples" / f"epoch_{epoch + 1:03d}.png"
                with distributed.unwrapped(model):
                    write_bytes(grid, sample_grid(model, to_device(batch, device, False), palette))
                tracker.log_artifact(grid, "samples")
            improved = row.get("val_miou", -1.0) >= best_miou or val_loader is None
            best_miou = max(best_miou, row.get("val_miou", -1.0))
            state = {"identity": identity, "epoch": epoch + 1, "model": distributed.plain_state_dict(model),
                     "palette": np.asarray(palette).tolist(),
                     "optimizers": {n: o.state_dict() for n, o in optimizers.items()},
                     "schedulers": {n: s.state_dict() for n, s in schedulers.items()},
                     "scaler": scaler.state_dict(), "rng": torch.get_rng_state(), "best_miou": best_miou,
                     "history": history, "train_seconds": train_seconds}
            write_history(out_dir / "history.csv", history)
            if improved:  # before last.pt: a kill between the two redoes this epoch and rewrites best.pt
                save_torch(best_path, {"identity": identity, "epoch": epoch + 1, "model": state["model"],
                                       "palette": state["palette"], "val_miou": row.get("val_miou")})
            save_torch(last_path, state)  # the commit point of the epoch: resume starts after it
    finally:
        signal.signal(signal.SIGTERM, previous_handler)

    summary = {"epochs": total_epochs, "train_seconds": round(train_seconds, 3),
               "seconds_per_step": round(train_seconds / (total_epochs * steps_per_epoch), 5),
               "best_val_miou": best_miou if val_loader is not None else None,
               "final": history[-1] if history else {}, "discriminator_collapse": collapsed,
               "diverged": False, "params": parameter_counts(model), "device": str(device)}
    if rank.is_main:
        write_json(out_dir / "summary.json", summary)
        tracker.log_metrics({"train_seconds": train_seconds}
                            | ({"best_val_miou": best_miou} if val_loader is not None else {}))
    return summary


def train_member(cfg: Config, name: str, seed: int, data_dir: Path, out_dir: Path, resume: bool = True) -> dict:
    """`seg-p2p train --member NAME`: fit one member on train, validate on val."""
    from seg_p2p.data.dataset import SegmentationDataset
    from seg_p2p.data.prepare import PreparedData
    from seg_p2p.data.transforms import build_transform

    check_seed(seed)
    data = PreparedData(data_dir)
    seed_everything(seed, cfg.train.deterministic)  # the initial weights too: same seed, same run
    model = build_member(cfg, name, data.spec)
    select_device(cfg.train.device)  # refuse a missing device and an unwritable --out before any work
    check_writable(out_dir)
    train_set = SegmentationDataset(data, "train", build_transform(cfg.data, train=True), seed)
    val_set = SegmentationDataset(data, "val", build_transform(cfg.data, train=False), seed)
    identity = fingerprint(cfg.members[name].model_dump(), cfg.train.model_dump(), cfg.data.model_dump(), seed,
                           inputs=data.files())
    tags = {"stage": "train", "member": name, "seed": str(seed)}
    params = flatten({"member": cfg.members[name].model_dump(), "train": cfg.train.model_dump(),
                      "data": cfg.data.model_dump(), "seed": seed})
    with Tracker(cfg, f"train/{name}", tags, params) as tracker:
        try:
            summary = fit(model, train_set, val_set, cfg, seed, out_dir, tracker, identity, data.spec.palette,
                          data.spec.num_classes, resume)
        except TrainingDiverged as exc:
            raise UserError(str(exc)) from None
        tracker.log_artifact(out_dir / "checkpoints" / "best.pt", "model")
    return summary
