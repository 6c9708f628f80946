"""The training loop: Adam with warm-up, gradient clipping, EMA, periodic resumable state.

A killed run re-run with the same config resumes from its last saved state and ends with exactly
the weights of an uninterrupted run: the state holds the model, EMA, optimiser, the process's own
parameters (SD-2015's learned β) and both random generators.

Under torchrun (distributed.py) the N processes of a job draw one data order and one set of t and
noise for the whole batch from the same seeds, each takes its 1/N slice (draws.Shard), and
DistributedDataParallel averages the gradients: the same steps as one process with the whole batch,
up to the order of float sums. Rank 0 logs and writes the state; every process resumes from it.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..build import build
from ..choices import Choice
from ..config import RunConfig
from ..convention import DataMap
from ..diffusion.draws import Shard, moved, rand, randint
from ..diffusion.families import family
from ..io import InputError, load_torch, save_torch
from ..runtime import derive_seed, progress, uses_channels_last
from . import distributed
from .precision import autocast_bf16

LOG = logging.getLogger("diffrepro.train")
RECORD_EVERY = 10  # steps whose losses are read from the device at once
FINAL_LOSS_STEPS = 100  # train.json's final_loss: the mean loss of the last steps


@dataclass
class TrainResult:
    model: torch.nn.Module
    ema: torch.nn.Module
    process: object
    history: dict = field(default_factory=dict)   # step, loss, lr lists
    wall_s: float = 0.0
    steps_run: int = 0                             # steps run in this process (less when resumed)
    resumed_from: int = 0
    rates: list = field(default_factory=list)      # images/s of each history row (not in model.pt: timing)
    final_loss: float = float("nan")               # the mean loss of the last FINAL_LOSS_STEPS steps


# train settings that only say how long to train, how often to save, what to keep or how to log: a
# resumable state of the same run with other values of these is continued (train.steps too, unless
# the learning rate depends on it)
NOT_IN_STATE = ("steps", "checkpoint_every", "keep_steps", "logger")


def state_digest(run: RunConfig, seed: int, data_shape, init_digest: str | None = None,
                 data_digest: str | None = None, code_digest: str | None = None) -> str:
    """What a resumable state must share with this job to be continued: the settings the train stage
    reads (dataset, model, diffusion, train but NOT_IN_STATE), the seed, the data's shape, and the
    digests of the weights it starts from, of the training data and of the code that trains."""
    train = {k: v for k, v in run.to_dict()["train"].items() if k not in NOT_IN_STATE}
    if LRSchedule.from_str(run.train.lr_schedule) is LRSchedule.LINEAR_DECAY:
        train["steps"] = run.train.steps  # the decay is spread over the whole run
    d = run.to_dict()
    blob = json.dumps({"dataset": d["dataset"], "model": d["model"], "diffusion": d["diffusion"], "train": train,
                       "seed": seed, "shape": list(data_shape), "init": init_digest, "data": data_digest,
                       "code": code_digest}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class LRSchedule(Choice):
    """The learning rate after warm-up (params runs.<run>.train.lr_schedule)."""

    CONSTANT = "constant"
    LINEAR_DECAY = "linear_decay"  # flat for half the run, then linearly to 0


class TrainLogger(Choice):
    """Where the live training record goes (params runs.<run>.train.logger)."""

    CSV = "csv"          # loss.csv, rewritten atomically every train.log_every steps
    DVCLIVE = "dvclive"  # also DVCLive's metrics (optional package): `dvc exp show` sees the live step


def _lr_at(step: int, run: RunConfig) -> float:
    """Linear warm-up, then constant or (linear_decay) flat for half the run and linearly to 0."""
    tc = run.train
    scale = min(1.0, (step + 1) / tc.warmup_steps) if tc.warmup_steps > 0 else 1.0
    if LRSchedule.from_str(tc.lr_schedule) is LRSchedule.LINEAR_DECAY:
        scale *= min(1.0, 2.0 * (1.0 - step / tc.steps))
    return tc.lr * scale


def _random_hflip(x: torch.Tensor, generator: torch.Generator | Shard) -> torch.Tensor:
    flip = rand((x.shape[0],), generator, x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


class _Objective(torch.nn.Module):
    """The network and its process as one module, so that DistributedDataParallel averages the
    gradients of both (SD-2015's learned β are the process's parameters)."""

    def __init__(self, model: torch.nn.Module, process):
        super().__init__()
        self.model = model
        self.process = process

    def forward(self, x_start, generator):
        # every process draws its own t and noise (DDPM: L_simple/L_vlb/hybrid; SD-2015: an
        # unbiased estimate of the negative bound)
        return self.process.training_loss(self.model, x_start, generator=generator).mean()


@dataclass
class Loop:
    """Everything a training step touches, built once by `prepare`: train() steps through it, and
    benchmarks/speed.py times the very same `train_step`."""
    run: RunConfig
    data: torch.Tensor               # the training set [N x ...]: on the device, or on the host when too large
    model: torch.nn.Module
    ema: torch.nn.Module
    process: object
    objective: torch.nn.Module       # model and process as one module (DistributedDataParallel for N processes)
    optimizer: torch.optim.Optimizer
    params: list                     # what Adam updates: the network's and the process's (SD-2015's learned β)
    index_gen: torch.Generator       # batch indices, flips, dequantisation: on the CPU
    noise_gen: torch.Generator       # t and noise: on the training device
    index_draws: torch.Generator | Shard
    noise_draws: torch.Generator | Shard
    local: int                       # this process's slice of every batch
    device: torch.device
    group: distributed.Group
    data_map: DataMap | None
    use_bf16: bool                   # bf16 autocast (train.precision: autocast_bf16)
    channels_last: bool              # image batches and conv weights in NHWC (uses_channels_last)
    digest: str                      # state_digest: a resumable state of another config is not resumed
    history: dict                    # step, loss, lr lists: whole rows (those of the resumed state, then this run's)
    start_step: int = 0              # the step the resumed state ended at
    running: list = field(default_factory=list)    # the losses since the last row
    recent: list = field(default_factory=list)     # the losses of the last FINAL_LOSS_STEPS steps
    rates: list = field(default_factory=list)      # images/s of each row
    grid_rows: list = field(default_factory=list)  # [(step, samples)] drawn every train.sample_every steps

    def __post_init__(self):
        self.ema_params, self.model_params = list(self.ema.parameters()), list(self.model.parameters())


def _training_data(x_train, device: torch.device) -> torch.Tensor:
    """The training set as float32, on the device when it takes at most a quarter of the GPU's free
    memory (CIFAR-10's 50,000 images take 614 MB), else left on the host: each batch is then gathered
    there and copied from pinned memory (_gather)."""
    data = torch.as_tensor(x_train, dtype=torch.float32)
    if device.type == "cuda" and data.nbytes > torch.cuda.mem_get_info(device)[0] // 4:
        return data
    return data.to(device)


def _gather(data: torch.Tensor, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The batch data[idx] on `device` (idx drawn on the CPU), without waiting for the device."""
    if data.device.type == device.type:
        return data[moved(idx, device)]
    return moved(data[idx], device)


def data_digest(x) -> str:
    """SHA-256 of the training set's values (a state trained on other data is not continued)."""
    array = np.ascontiguousarray(x)
    return hashlib.sha256(memoryview(array).cast("B")).hexdigest()[:16] + f":{array.dtype}:{array.shape}"


def prepare(run: RunConfig, x_train: np.ndarray, *, device: torch.device, seed: int, state_path=None,
            group: distributed.Group = distributed.SINGLE, data_map: DataMap | None = None,
            bf16: bool | None = None, channels_last: bool | None = None, init: dict | None = None,
            code_digest: str | None = None) -> Loop:
    """The network, its EMA and process on `device`, Adam and both generators for training `run` on
    `x_train` [N x ...], resumed from `state_path` where it holds this config's state, else started
    from `init` (train.init_from: {"model": network state, "process": process state or None,
    "digest": the source's SHA-256}) where given.

    Adam's fused kernel everywhere; bf16 autocast as train.precision says (autocast_bf16); image
    networks in channels_last (uses_channels_last); train.compile compiles the network. bf16, channels_last: None
    as just said; True/False force them (benchmarks/speed.py compares).
    """
    data = _training_data(x_train, device)
    if device.type == "cuda":  # fixed shapes: let cuDNN time its convolution algorithms once
        torch.backends.cudnn.benchmark = True
    data_shape = tuple(data.shape[1:])
    use_bf16 = autocast_bf16(run, device) if bf16 is None else bf16
    nhwc = uses_channels_last(device, len(data_shape), use_bf16) if channels_last is None else channels_last
    torch.manual_seed(seed)  # network initialisation, the same in every process
    model, process = build(run, data_shape)
    if init is not None:  # fine-tuning: the source's (EMA) weights, and its learned β where its family has them
        model.load_state_dict(init["model"])
        if init.get("process") is not None:
            process.load_state_dict(init["process"])
    model, process = model.to(device), process.to(device)
    if nhwc:  # 4-D weights only: the MLPs are untouched
        model = model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).requires_grad_(False)
    if group.rank:  # dropout: each process its own draws (rank 0 those of a one-process run)
        torch.manual_seed(derive_seed(seed, "rank", str(group.rank)))
    params = list(model.parameters()) + list(process.parameters())  # SD-2015's learned β, where learned
    # Adam's fused kernel on CUDA and CPU alike: on this CPU 5x faster than the default for-loop
    # Adam (1.0 vs 5.4 ms a step for the digits U-Net), the same update up to float rounding (1e-8)
    fused = {"fused": True}
    optimizer = torch.optim.Adam(params, lr=run.train.lr, **fused)
    # batch indices and flips from a CPU generator; t and noise from one on the training device
    index_gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator(device=device).manual_seed(seed + 1)
    history = {"step": [], "loss": [], "lr": []}
    digest = state_digest(run, seed, data_shape, None if init is None else init["digest"], data_digest(x_train),
                          code_digest)
    loop_state = {"start_step": 0, "running": [], "recent": [], "rates": [], "grid_rows": []}
    if state_path is not None and Path(state_path).exists():
        loop_state = _resume(state_path, run, digest, model, ema, process, optimizer, index_gen, noise_gen, history,
                             group)
    objective = _Objective(model, process)
    if group.world > 1:  # averages the gradients over the processes during backward()
        objective = torch.nn.parallel.DistributedDataParallel(objective)
    if run.train.compile:  # in place: the state_dict keeps its keys
        model.compile()

    n = data.shape[0]
    batch = min(run.train.batch_size, n)
    if batch % group.world:
        raise ValueError(f"run {run.name!r}, stage train: a batch of {batch} examples (train.batch_size, at most "
                         f"the {n} training examples) cannot be split evenly over {group.world} processes; "
                         f"allowed: a batch divisible by {group.world}")
    index_draws, noise_draws = ((index_gen, noise_gen) if group.world == 1 else
                                (Shard(index_gen, group.rank, group.world), Shard(noise_gen, group.rank, group.world)))
    return Loop(run=run, data=data, model=model, ema=ema, process=process, objective=objective,
                optimizer=optimizer, params=params, index_gen=index_gen, noise_gen=noise_gen,
                index_draws=index_draws, noise_draws=noise_draws, local=batch // group.world, device=device,
                group=group, data_map=data_map, use_bf16=use_bf16, channels_last=nhwc, digest=digest,
                history=history, **loop_state)


def train_step(loop: Loop, step: int) -> torch.Tensor:
    """Optimiser step `step` (0-based) of the run: learning rate, batch (flips, dequantisation), loss,
    backward, clipping, Adam, EMA. Returns the whole batch's loss, detached, on the device: reading
    it waits for the device, so the loop reads losses in groups (_PendingLosses)."""
    run = loop.run
    lr = _lr_at(step, run)
    for param_group in loop.optimizer.param_groups:
        param_group["lr"] = lr
    idx = randint(0, loop.data.shape[0], (loop.local,), loop.index_draws)
    x = _gather(loop.data, idx, loop.device)
    if run.train.hflip and run.dataset.data_type == "image":
        x = _random_hflip(x, loop.index_draws)
    if loop.data_map is not None and loop.data_map.continuous:
        x = loop.data_map.to_process(x, loop.index_draws)
    if loop.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type=loop.device.type, dtype=torch.bfloat16, enabled=loop.use_bf16):
        loss = loop.objective(x, loop.noise_draws)
    value = distributed.average(loss.detach(), loop.group)  # the whole batch's loss, alike in every process
    loop.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if run.train.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(loop.params, run.train.grad_clip)
    loop.optimizer.step()
    with torch.no_grad():
        torch._foreach_lerp_(loop.ema_params, loop.model_params, 1.0 - run.train.ema_decay)
    return value


def _stopped(run: RunConfig, what: str, state_path) -> RuntimeError:
    kept = (f"the last resumable state is kept in {state_path}" if state_path is not None
            and Path(state_path).exists() else "no resumable state was saved yet")
    return RuntimeError(f"run {run.name!r}, stage train: {what}; model.pt is not written and {kept} "
                        f"(lower train.lr or raise grad_clip)")


class _PendingLosses:
    """The losses of the steps since the last read, kept on the device. Reading them waits for the
    device, so the loop reads every RECORD_EVERY steps and before a state is saved, not every step;
    a non-finite one stops the stage there, naming the first such step."""

    def __init__(self, run: RunConfig, state_path):
        self.run, self.state_path = run, state_path
        self.steps, self.values = [], []

    def add(self, step: int, loss: torch.Tensor) -> None:
        self.steps.append(step)
        self.values.append(loss)

    def read(self) -> list:
        """The pending losses as floats (each what loss.item() gives), oldest first."""
        values = torch.stack(self.values).tolist() if self.values else []
        steps, self.steps, self.values = self.steps, [], []
        for step, value in zip(steps, values):
            if not math.isfinite(value):
                raise _stopped(self.run, f"the loss is {value} at step {step + 1}", self.state_path)
        return values


def _check_weights(loop: Loop, step: int, state_path) -> None:
    """A state or model.pt is written only of finite weights (the losses so far were finite, yet
    the last update may not be)."""
    if not bool(torch.stack([p.detach().isfinite().all() for p in loop.params]).all()):
        raise _stopped(loop.run, f"the weights are not finite after step {step}", state_path)


@dataclass
class Hooks:
    """What a training job does along the way besides stepping (the train stage wires them to files;
    each is called in the main process only, with the history so far)."""
    row: object = None         # row(history, rates, step, steps): a new row of the loss record (every train.log_every)
    keep: object = None        # keep(step, ema_state, process_state, history): EMA weights at a train.keep_steps step
    grid: object = None        # grid(rows): the training samples so far, [(step, examples)], one row per time


def _eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def ema_state(loop: Loop) -> dict:
    """The EMA weights with the raw network's buffers (what model.pt and a kept checkpoint hold)."""
    state = loop.ema.state_dict()
    for name, buf in loop.model.named_buffers():
        state[name] = buf.detach().clone()
    return state


@torch.no_grad()
def training_samples(loop: Loop, seed: int, device: torch.device) -> np.ndarray:
    """A small grid from the EMA weights: the same draws every time (a generator of its own, so the
    training draws are untouched), the fast sampler where the family has one (50 DDIM steps), at the
    precision the run trains at (what sample.precision auto samples at)."""
    from .precision import Autocast
    from .sampling import sample

    run, shape = loop.run, tuple(loop.data.shape[1:])
    n = 500 if run.dataset.data_type == "points" else 8
    fast = family(run.diffusion.family).fast_sampler
    gen = torch.Generator(device=device).manual_seed(derive_seed(seed, "training-samples"))
    was_training = loop.ema.training
    loop.ema.eval()
    net = Autocast(loop.ema) if loop.use_bf16 else loop.ema
    x = sample(loop.process, net, (n, *shape), generator=gen, device=device, progress=False,
               sampler="ddim" if fast else "ancestral",
               steps=min(50, loop.process.num_timesteps) if fast else None)
    loop.ema.train(was_training)
    if loop.data_map is not None:
        x = loop.data_map.from_process(x)
    return x.float().cpu().numpy()


def train(run: RunConfig, x_train: np.ndarray, *, device: torch.device, seed: int,
          state_path=None, show_progress: bool = True,
          group: distributed.Group = distributed.SINGLE, data_map: DataMap | None = None,
          hooks: Hooks | None = None, init: dict | None = None, code_digest: str | None = None) -> TrainResult:
    """Train `run` on `x_train` [N x ...]; save the resumable state to `state_path` every
    run.train.checkpoint_every steps and at the end (kept: raising train.steps continues from it).

    Every run.train.log_every steps a row of the loss record (the mean loss of those steps, the
    learning rate, images/s) goes to `hooks.row` and a line with rate and ETA to the log; every
    run.train.sample_every steps and at the end a row of samples from the EMA to `hooks.grid`; at
    each of run.train.keep_steps the EMA weights to `hooks.keep`.

    data_map: how stored examples meet the process (convention.py); SD-2015's images are
    dequantised afresh in every batch. init: weights to start from (train.init_from: the network's
    state dict, and the process's where its family learns one).

    group: this process's place in a multi-process job, whose process group distributed.joined has
    made (and `device` is this process's own); each process then trains on its slice of every batch.

    The loop waits for the device only when it reads the losses (every RECORD_EVERY steps, at a row
    and before a state is saved): a non-finite loss stops the stage there, naming its first step,
    before any state or model.pt holds the weights it led to.
    """
    hooks = hooks or Hooks()
    loop = prepare(run, x_train, device=device, seed=seed, state_path=state_path, group=group, data_map=data_map,
                   init=init, code_digest=code_digest)
    model, ema, history, start_step = loop.model, loop.ema, loop.history, loop.start_step
    tc, steps = run.train, run.train.steps
    batch = min(tc.batch_size, loop.data.shape[0])
    keep = set(tc.keep_steps)
    t0 = last = time.perf_counter()
    model.train()
    bar = progress(range(start_step, steps), total=steps - start_step, desc=f"train {run.name}",
                   enabled=show_progress and group.main)
    pending = _PendingLosses(run, state_path)
    running, rates, rows, recent = loop.running, loop.rates, loop.grid_rows, loop.recent

    def read():
        values = pending.read()
        running.extend(values)
        recent.extend(values)
        del recent[:-FINAL_LOSS_STEPS]
    for step in bar:
        pending.add(step, train_step(loop, step))
        done = step + 1
        is_row = done % tc.log_every == 0
        save = state_path is not None and (done % tc.checkpoint_every == 0 or done == steps)
        if done % RECORD_EVERY == 0 or is_row or save or done == steps:
            read()
        if is_row:
            now = time.perf_counter()
            rate = tc.log_every * batch / max(now - last, 1e-9)
            last = now
            history["step"].append(done)
            history["loss"].append(float(np.mean(running)))
            history["lr"].append(_lr_at(step, run))
            rates.append(round(rate, 1))
            running.clear()
            if group.main:
                LOG.info("step %d/%d loss %.5f lr %.2e | %.1f images/s | ETA %s", done, steps, history["loss"][-1],
                         history["lr"][-1], rate, _eta((steps - done) * batch / rate))
                bar.set_postfix(loss=f"{history['loss'][-1]:.4f}")
                if hooks.row:
                    hooks.row(history, rates, done, steps)
        aside = time.perf_counter()  # kept weights and sample rows are not counted in images/s
        if group.main and done in keep:
            _check_weights(loop, done, state_path)
            if hooks.keep:
                hooks.keep(done, ema_state(loop), loop.process.state_dict(), history)
        if group.main and tc.sample_every and done % tc.sample_every == 0:
            rows.append((done, training_samples(loop, seed, device)))
            if hooks.grid:
                hooks.grid(rows)
        last += time.perf_counter() - aside
        if save:
            _check_weights(loop, done, state_path)
            _save_state(state_path, loop, done, group)
    bar.close()
    _check_weights(loop, steps, state_path)
    if state_path is not None and steps == 0:  # no training (train.steps: 0): the state of the network as built
        _save_state(state_path, loop, 0, group)
    read()
    final = {k: list(v) for k, v in history.items()}
    final_rates = list(rates)
    if running:  # the last, shorter row (not in the state: a longer run goes on filling it)
        final["step"].append(steps)
        final["loss"].append(float(np.mean(running)))
        final["lr"].append(_lr_at(steps - 1, run))
        final_rates.append(final_rates[-1] if final_rates else 0.0)
    if group.main:
        final_rows = list(rows)
        if not final_rows or final_rows[-1][0] != steps:
            final_rows.append((steps, training_samples(loop, seed, device)))
        if hooks.row:
            hooks.row(final, final_rates, steps, steps)
        if hooks.grid:
            hooks.grid(final_rows)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)
    wall = time.perf_counter() - t0
    return TrainResult(model=model, ema=ema, process=loop.process, history=final, wall_s=wall,
                       steps_run=steps - start_step, resumed_from=start_step, rates=final_rates,
                       final_loss=float(np.mean(recent)) if recent else float("nan"))


def _process_rng(device: torch.device) -> tuple:
    """This process's own global generators (dropout's): the CPU's, and its CUDA device's if it trains on one."""
    return torch.get_rng_state(), (torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def _save_state(path, loop: Loop, step: int, group=distributed.SINGLE):
    """The resumable state after `step`: everything the next step reads (weights, EMA, optimiser, the
    process's learned parameters, every generator) and the record so far (whole rows, the losses since
    the last one, the training samples' rows)."""
    model = loop.model
    rank_rng = (distributed.gather(_process_rng(next(model.parameters()).device), group) if group.world > 1
                else None)
    if not group.main:  # the other processes hold the same weights, optimiser and generators
        return
    state = {
        "config_hash": loop.digest, "step": step, "run": loop.run.name,
        "model": model.state_dict(), "ema": loop.ema.state_dict(),
        "process": loop.process.state_dict(),
        "optimizer": loop.optimizer.state_dict(),
        "index_gen": loop.index_gen.get_state(), "noise_gen": loop.noise_gen.get_state(),
        "torch_rng": torch.get_rng_state(),  # dropout draws from the global generator
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "history": loop.history, "running": list(loop.running), "recent": list(loop.recent),
        "rates": list(loop.rates),
        "grid_steps": [s for s, _ in loop.grid_rows],
        "grid": [torch.from_numpy(np.ascontiguousarray(x)) for _, x in loop.grid_rows],
    }
    if rank_rng is not None:
        state["rank_rng"] = rank_rng  # [(CPU, CUDA) generator states] per process, in rank order
    save_torch(path, state)


def _resume(path, run: RunConfig, digest, model, ema, process, optimizer, index_gen, noise_gen, history,
            group=distributed.SINGLE) -> dict:
    """Load the state at `path` into the job when it is this config's (Loop's start_step, running,
    rates, grid_rows); else the fresh start's values, saying why in the log."""
    fresh = {"start_step": 0, "running": [], "recent": [], "rates": [], "grid_rows": []}
    try:
        state = load_torch(path, "training state")  # tensors and plain values only: never runs code
        ok = isinstance(state, dict) and "config_hash" in state
    except InputError as exc:  # a state file cut short by the kill itself, or not ours
        LOG.warning("training state %s is unreadable (%s); starting from step 0", path, exc)
        return fresh
    if not ok or state["config_hash"] != digest:
        if (ok and LRSchedule.from_str(run.train.lr_schedule) is LRSchedule.LINEAR_DECAY
                and state.get("run") == run.name):
            LOG.info("training state %s is not continued: train.lr_schedule linear_decay spreads its decay over "
                     "train.steps, so a run of another length (or other settings) trains from step 0", path)
        else:
            LOG.info("training state %s belongs to another config; starting from step 0", path)
        return fresh
    if int(state["step"]) > run.train.steps:
        LOG.info("training state %s is at step %d, past train.steps = %d; starting from step 0", path,
                 state["step"], run.train.steps)
        return fresh
    model.load_state_dict(state["model"])
    ema.load_state_dict(state["ema"])
    process.load_state_dict(state["process"])
    optimizer.load_state_dict(state["optimizer"])
    index_gen.set_state(state["index_gen"])
    noise_gen.set_state(state["noise_gen"])
    if group.world > 1 and len(state.get("rank_rng") or ()) == group.world:
        cpu_rng, cuda_rng = state["rank_rng"][group.rank]
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:  # trained on CUDA: this process's device (distributed.joined set it)
            torch.cuda.set_rng_state(cuda_rng)
    else:
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
    for k in history:
        history[k].extend(state["history"][k])
    step = int(state["step"])
    if step == run.train.steps:
        LOG.info("training state %s is finished at step %d: nothing to train", path, step)
    else:
        LOG.info("resuming %s: continuing from step %d", path, step)
    return {"start_step": step, "running": list(state.get("running", [])), "recent": list(state.get("recent", [])),
            "rates": list(state.get("rates", [])),
            "grid_rows": [(int(s), x.numpy()) for s, x in zip(state.get("grid_steps", []), state.get("grid", []))]}
