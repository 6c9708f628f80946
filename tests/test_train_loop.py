"""The training loop reads its losses from the device in groups (every RECORD_EVERY steps and before a
state is saved): the history is still the mean of each step's loss.item(), and a non-finite loss still
stops the stage naming its first step, before any state holds the weights it led to."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from diffrepro.config import load_params
from diffrepro.runs import training

from .conftest import TINY_PARAMS


def _run(**train):
    run = load_params(TINY_PARAMS).run("toyroll-ddpm")
    return dataclasses.replace(run, train=dataclasses.replace(run.train, **train))


X = np.random.default_rng(0).standard_normal((256, 2)).astype(np.float32)


def test_train_is_prepare_then_train_step_and_records_the_mean_of_each_steps_loss():
    run = _run(steps=25, checkpoint_every=1000, log_every=10)
    loop = training.prepare(run, X, device=torch.device("cpu"), seed=5)
    loop.model.train()
    per_step = [training.train_step(loop, step).item() for step in range(25)]
    result = training.train(run, X, device=torch.device("cpu"), seed=5, show_progress=False)
    assert result.history["step"] == [10, 20, 25]
    assert result.history["loss"] == [float(np.mean(per_step[a:b])) for a, b in ((0, 10), (10, 20), (20, 25))]
    assert result.final_loss == pytest.approx(float(np.mean(per_step)), rel=1e-12)  # the last (up to 100) steps
    for name, value in result.model.state_dict().items():
        assert torch.equal(value, loop.model.state_dict()[name]), name


@pytest.mark.parametrize("checkpoint_every", [1000, 3])
def test_a_non_finite_loss_names_its_first_step_and_saves_no_state_after_it(tmp_path, checkpoint_every):
    run = _run(lr=1.0e30, grad_clip=0.0, steps=40, checkpoint_every=checkpoint_every)
    state = tmp_path / "train_state.pt"
    with pytest.raises(RuntimeError, match=r"run 'toyroll-ddpm', stage train: the loss is (inf|nan) at step 2; "
                                           r"model.pt is not written and no resumable state was saved yet"):
        training.train(run, X, device=torch.device("cpu"), seed=0, state_path=state, show_progress=False)
    assert not state.exists()


def test_a_finished_state_is_continued_only_with_the_same_data_code_and_settings(tmp_path):
    state = tmp_path / "train_state.pt"
    run = _run(steps=20, checkpoint_every=1000, log_every=10)
    training.train(run, X, device=torch.device("cpu"), seed=5, state_path=state, show_progress=False,
                   code_digest="code-a")
    cpu = torch.device("cpu")

    def start(run, x=X, code="code-a", seed=5):
        return training.prepare(run, x, device=cpu, seed=seed, state_path=state, code_digest=code).start_step

    assert start(_run(steps=50, checkpoint_every=1000, log_every=10, keep_steps=(30,))) == 20  # longer: continue
    assert start(run) == 20                          # the same length: nothing left to train
    assert start(run, x=X + 1.0) == 0                # other training data of the same shape
    assert start(run, code="code-b") == 0            # other training code
    assert start(run, seed=6) == 0
    assert start(_run(steps=50, checkpoint_every=1000, log_every=10, lr=2e-3)) == 0
    assert start(_run(steps=10, checkpoint_every=1000, log_every=10)) == 0  # shorter than the state


def _image_run(precision):
    run = load_params(TINY_PARAMS).run("digits-tiny")
    return dataclasses.replace(run, train=dataclasses.replace(run.train, precision=precision))


def test_precision_auto_is_bf16_on_cuda_for_ddpm_only_and_fp32_or_bf16_force_it():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert training.autocast_bf16(_image_run("auto"), cuda) is True
    assert training.autocast_bf16(_image_run("auto"), cpu) is False
    sd = load_params(TINY_PARAMS).run("toyroll-sd")                  # SD-2015: learned β, fp32 schedule math
    assert training.autocast_bf16(sd, cpu) is False and training.autocast_bf16(sd, cuda) is False
    assert training.autocast_bf16(_image_run("fp32"), cuda) is False
    assert training.autocast_bf16(_image_run("bf16"), cpu) is True
    assert training.autocast_bf16(dataclasses.replace(sd, train=dataclasses.replace(sd.train, precision="bf16")),
                                  cpu) is True


def test_image_networks_train_in_channels_last_except_under_bf16_on_the_cpu():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert training.uses_channels_last(cpu, 3, bf16=False) and training.uses_channels_last(cuda, 3, bf16=True)
    assert not training.uses_channels_last(cpu, 3, bf16=True)
    assert not training.uses_channels_last(cpu, 1, bf16=False) and not training.uses_channels_last(cuda, 1, bf16=True)
    x = np.zeros((16, 1, 8, 8), np.float32)
    loop = training.prepare(_image_run("auto"), x, device=cpu, seed=0)
    conv = next(p for p in loop.model.parameters() if p.dim() == 4 and p.shape[1] > 1)
    assert loop.channels_last and conv.is_contiguous(memory_format=torch.channels_last)


def test_bf16_training_runs_the_network_in_bf16_and_keeps_weights_ema_and_loss_in_fp32():
    x = np.random.default_rng(1).integers(0, 17, (64, 1, 8, 8)).astype(np.float32) / 8 - 1
    seen = {}
    losses = {}
    for precision in ("fp32", "bf16"):
        loop = training.prepare(_image_run(precision), x, device=torch.device("cpu"), seed=3)
        hook = loop.model.register_forward_hook(lambda m, i, out: seen.__setitem__(precision, out.dtype))
        loop.model.train()
        losses[precision] = torch.stack([training.train_step(loop, step) for step in range(3)])
        hook.remove()
        assert losses[precision].dtype == torch.float32 and torch.isfinite(losses[precision]).all()
        assert {p.dtype for p in loop.model.parameters()} | {p.dtype for p in loop.ema.parameters()} == {torch.float32}
    assert seen == {"fp32": torch.float32, "bf16": torch.bfloat16}
    # the same draws and start (DDPM's zero output layer: the first loss is E[ε²] in both); after an update
    # the losses differ by bf16 rounding only
    assert losses["bf16"][2].item() == pytest.approx(losses["fp32"][2].item(), rel=0.05)
    assert losses["bf16"][2].item() != losses["fp32"][2].item()


def test_a_trained_image_network_evaluates_in_channels_last_with_the_same_outputs(tmp_path):
    """TrainedRun.open lays image networks out NHWC for sampling and the bound: the same function."""
    from types import SimpleNamespace

    from diffrepro.build import build
    from diffrepro.io import save_torch
    from diffrepro.runs.checkpoint import TrainedRun, checkpoint_dict

    run, shape = _image_run("auto"), (1, 8, 8)
    torch.manual_seed(0)
    net, process = build(run, shape)
    with torch.no_grad():  # DDPM's zero output layer would make every layout agree trivially
        for p in net.parameters():
            p.normal_(0, 0.2)
    result = SimpleNamespace(ema=net, model=net, process=process, history={"step": [], "loss": []})
    save_torch(tmp_path / "model.pt", checkpoint_dict(run, result, shape, seed=0))
    opened = TrainedRun.open(tmp_path / "model.pt", torch.device("cpu"))
    convs = [p for p in opened.model.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] > 1]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert not any(p.is_contiguous(memory_format=torch.channels_last) for p in net.parameters()
                   if p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] > 1)
    x, t = torch.randn(6, *shape), torch.arange(6) % run.diffusion.timesteps
    with torch.no_grad():
        nchw, nhwc = net.eval()(x, t), opened.model(x, t)
    assert nchw.abs().max() > 0.1
    torch.testing.assert_close(nhwc, nchw, rtol=1e-4, atol=1e-5)
