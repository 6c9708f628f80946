"""sample.precision: what each value resolves to, and the sampler's network under bf16 autocast
(runs/precision.py, sampling.for_sampling): a copy in its own layout, float32 out, the fp32 network
left to the bound."""
import copy
import dataclasses
from pathlib import Path

import pytest
import torch

from diffrepro.build import build
from diffrepro.config import load_params
from diffrepro.convention import DataMap
from diffrepro.runs.checkpoint import TrainedRun
from diffrepro.runs.precision import Bf16Net, Precision, sampling_bf16
from diffrepro.runs.sampling import for_sampling, sample
from diffrepro.runs.slicing import Sliced

from .conftest import TINY_PARAMS

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _run(name="digits-tiny", train="auto", sample_precision="auto"):
    run = load_params(TINY_PARAMS).run(name)
    return dataclasses.replace(run, train=dataclasses.replace(run.train, precision=train),
                               sample=dataclasses.replace(run.sample, precision=sample_precision))


def test_auto_samples_at_the_precision_the_run_trained_at_and_fp32_or_bf16_force_it():
    assert Precision.values() == ("auto", "fp32", "bf16")
    ddpm = _run()
    assert sampling_bf16("auto", ddpm, CPU) is False            # trained in fp32 on the CPU (train auto)
    assert sampling_bf16("auto", ddpm, CUDA) is True            # DDPM trains under bf16 on CUDA (train auto)
    assert sampling_bf16("auto", _run(train="bf16"), CPU) is True
    assert sampling_bf16("auto", _run(train="fp32"), CUDA) is False
    sd = _run("toyroll-sd")                                      # SD-2015 trains in fp32 everywhere by default
    assert sampling_bf16("auto", sd, CUDA) is False
    assert sampling_bf16("bf16", ddpm, CPU) is True and sampling_bf16("bf16", sd, CPU) is True
    assert sampling_bf16("fp32", _run(train="bf16"), CUDA) is False
    with pytest.raises(ValueError, match="allowed: auto, fp32, bf16"):
        sampling_bf16("fp16", ddpm, CPU)


def _trained(run, shape=(1, 8, 8)):
    torch.manual_seed(0)
    model, process = build(run, shape)
    with torch.no_grad():  # away from the zero-initialised output layer, so outputs carry bf16 rounding
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model = model.eval().to(memory_format=torch.channels_last)  # as TrainedRun.open lays an image net out
    return TrainedRun(run=run, model=model, process=process, data_map=DataMap.from_dict(None), data_shape=shape,
                      path=Path("model.pt"), digest="0" * 64)


def test_fp32_sampling_is_the_run_itself_and_bf16_a_copy_under_autocast_with_float32_out():
    trained = _trained(_run(train="bf16"))
    fp32 = for_sampling(trained, "fp32")  # the run's own network, called in slices on the CPU (slicing.py)
    assert isinstance(fp32.model, Sliced) and fp32.model.net is trained.model and fp32.process is trained.process
    sampler = for_sampling(trained, "auto")                      # trained under bf16: samples under bf16
    assert isinstance(sampler.model.net, Bf16Net) and not isinstance(trained.model, Bf16Net)
    # the copy is laid out as bf16 training lays it out on the CPU (NCHW); the bound's fp32 net is untouched
    def a_3x3_conv(net):  # one whose two layouts differ (more than one channel in, a 3x3 window)
        return next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1
                    and m.kernel_size == (3, 3))

    conv, conv32 = a_3x3_conv(sampler.model), a_3x3_conv(trained.model)
    assert conv.weight.is_contiguous()
    assert conv32.weight.is_contiguous(memory_format=torch.channels_last) and not conv32.weight.is_contiguous()
    assert conv.weight is not conv32.weight and torch.equal(conv.weight, conv32.weight.to(torch.bfloat16))
    x, t = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 3, 4, 5])
    with torch.no_grad():
        ref, out = trained.model(x, t), sampler.model(x, t)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    # bf16's 8-bit mantissa: close to the fp32 output, and not equal to it (the convolutions ran in bf16)
    assert not torch.equal(out, ref)
    assert (out - ref).abs().max() <= 0.05 * ref.abs().max()
    # its weights cast once are autocast's casts: the fp32 network under autocast, in the same layout,
    # gives the same bytes
    assert conv.weight.dtype == torch.bfloat16 and conv32.weight.dtype == torch.float32
    nchw = copy.deepcopy(trained.model).to(memory_format=torch.contiguous_format)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = nchw(x, t).float()
    assert torch.equal(out, autocast)


def test_a_bf16_chain_is_deterministic_and_stays_near_the_fp32_chain():
    trained = _trained(_run())
    sampler = for_sampling(trained, "bf16")
    shape = (4, 1, 8, 8)
    a = sample(trained.process, sampler.model, shape, torch.Generator().manual_seed(0), clip_denoised=True)
    b = sample(trained.process, sampler.model, shape, torch.Generator().manual_seed(0), clip_denoised=True)
    ref = sample(trained.process, trained.model, shape, torch.Generator().manual_seed(0), clip_denoised=True)
    assert a.dtype == torch.float32 and torch.equal(a, b)
    assert not torch.equal(a, ref) and (a - ref).abs().max() < 0.1


def test_training_grids_sample_at_the_precision_the_run_trains_at_and_leave_the_ema_float32():
    """train.sample_every's grids (training.training_samples) from a run trained under bf16: the chain
    the bf16 sampler walks (Bf16Net on a copy of the EMA, bit for bit), not fp32's; the EMA, which
    goes on training, keeps its float32 weights."""
    import numpy as np

    from diffrepro.runs.training import prepare, training_samples

    x = np.random.default_rng(0).uniform(-1, 1, (16, 1, 8, 8)).astype(np.float32)
    loop = prepare(_run(train="bf16"), x, device=CPU, seed=0)
    with torch.no_grad():  # away from the zero-initialised output layer, so outputs carry bf16 rounding
        for p in loop.ema.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    before = {k: v.clone() for k, v in loop.ema.state_dict().items()}
    grid = training_samples(loop, seed=0, device=CPU)
    assert all(v.dtype == torch.float32 for v in loop.ema.state_dict().values())
    assert all(torch.equal(v, before[k]) for k, v in loop.ema.state_dict().items())
    assert loop.ema.training  # put back as it was (training)

    bf16 = Bf16Net(copy.deepcopy(loop.ema)).eval()
    fp32 = copy.deepcopy(loop.ema).eval()

    def grid_of(net):  # training_samples' draws: its generator, DDIM with 50 steps, mapped back
        from diffrepro.runtime import derive_seed
        gen = torch.Generator().manual_seed(derive_seed(0, "training-samples"))
        with torch.no_grad():
            z = sample(loop.process, net, (8, 1, 8, 8), generator=gen, sampler="ddim",
                       steps=min(50, loop.process.num_timesteps))
        return z.float().numpy()

    assert np.array_equal(grid, grid_of(bf16))
    assert not np.array_equal(grid, grid_of(fp32))
    assert np.abs(grid - grid_of(fp32)).max() < 0.1


def test_an_unknown_precision_is_refused_naming_the_allowed_values():
    with pytest.raises(ValueError, match="unknown Precision 'half'; allowed: auto, fp32, bf16"):
        for_sampling(_trained(_run()), "half")


@pytest.mark.slow  # the stage commands (prepare, train, sample, inpaint, nll), in this process
def test_the_sample_and_inpaint_stages_sample_at_the_precision_the_run_trained_at(tmp_path):
    """digits-tiny trained under bf16 (train.precision): its sample and inpaint stages with
    sample.precision auto walk the chain under bf16, so their outputs differ from fp32's, are
    reproducible, and keep the data's range; the nll stage (always fp32) is the same either way."""
    import numpy as np
    import yaml

    from .conftest import run_cli, stage_args

    raw = yaml.safe_load(TINY_PARAMS.read_text())
    raw["runs"] = {"digits-tiny": raw["runs"]["digits-tiny"]}
    raw["runs"]["digits-tiny"]["train"].update(precision="bf16", steps=4, sample_every=0, keep_steps=[],
                                               checkpoint_every=4)
    raw["datasets"] = {"tinydigits": raw["datasets"]["tinydigits"]}
    outputs = {}
    for precision in ("auto", "fp32", "auto"):
        raw["runs"]["digits-tiny"]["sample"]["precision"] = precision
        params = tmp_path / "params.yaml"
        params.write_text(yaml.safe_dump(raw, sort_keys=False))
        if not outputs:  # data and the model once: the precision is the sampler's, not the trainer's
            run_cli("prepare", *stage_args("prepare", "tinydigits", tmp_path, params), check=True)
            run_cli("train", *stage_args("train", "digits-tiny", tmp_path, params), check=True)
        got = {}
        for stage, out in (("sample", "--samples"), ("inpaint", "--arrays"), ("nll", "--metrics")):
            args = stage_args(stage, "digits-tiny", tmp_path, params)
            run_cli(stage, *args, check=True)
            path = Path(args[args.index(out) + 1])
            got[stage] = path.read_bytes()
            if stage == "sample":
                x = np.load(path)["x"]
                assert x.shape == (32, 1, 8, 8) and x.min() >= -1 and x.max() <= 1  # clipped to the data's range
            path.unlink()
        outputs.setdefault(precision, []).append(got)
    (bf16_a, bf16_b), (fp32,) = outputs["auto"], outputs["fp32"]
    assert bf16_a == bf16_b                                      # same params and seed: the same bytes
    assert bf16_a["sample"] != fp32["sample"] and bf16_a["inpaint"] != fp32["inpaint"]
    assert bf16_a["nll"] == fp32["nll"]                          # the bound never samples: fp32 both times
