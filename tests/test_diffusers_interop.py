"""Models in and out: a DDPM run exported as a diffusers DDPMPipeline folder gives our network's output,
our schedule and our ancestral samples; a diffusers folder imported as a network (arch diffusers) is
scored by the same bound (its whole chain: test_paper_chain.py); safetensors round trips; `diffrepro
generate` writes what FID tools read. Every refusal is one line and writes nothing."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from diffrepro.build import build
from diffrepro.config import parse_params
from diffrepro.io import InputError, save_torch
from diffrepro.runs.checkpoint import TrainedRun, checkpoint_dict
from diffrepro.runs.sampling import sample

from .conftest import TINY_PARAMS, run_cli

diffusers = pytest.importorskip("diffusers")  # the dev extra installs it: CI runs every test here
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel  # noqa: E402

from diffrepro.interop.diffusers import to_diffusers_state, unet_config  # noqa: E402

diffusers.utils.logging.disable_progress_bar()
diffusers.utils.logging.set_verbosity_error()

GOOGLE_CIFAR10_UNET = dict(  # google/ddpm-cifar10-32's unet/config.json (DDPM's CIFAR-10 model, 35.7M)
    act_fn="silu", attention_head_dim=None, block_out_channels=(128, 256, 256, 256), center_input_sample=False,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"), downsample_padding=0,
    flip_sin_to_cos=False, freq_shift=1, in_channels=3, layers_per_block=2, mid_block_scale_factor=1,
    norm_eps=1e-06, norm_num_groups=32, out_channels=3, sample_size=32, time_embedding_type="positional",
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))


def randomise(net: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Every weight drawn afresh (the zero-initialised last convolutions too), so nothing matches by
    being zero."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            gain = 1.0 if "norm" in name and name.endswith("weight") else 0.0  # GroupNorm scales about 1
            p.copy_(gain + torch.randn(p.shape, generator=gen) * scale)
    return net


def tiny_run(run: str = "digits-tiny", **diffusion):
    raw = yaml.safe_load(TINY_PARAMS.read_text())
    raw["runs"][run]["diffusion"].update(diffusion)
    if diffusion.get("var_type") == "learned_range":
        raw["runs"][run]["diffusion"]["loss_type"] = "hybrid"
    return raw, parse_params(raw).run(run)


def write_checkpoint(path: Path, run, shape, clip=None, model_overrides=None) -> Path:
    """A model.pt as the train stage writes it, of a network with random weights (no training needed)."""
    if model_overrides:
        run = type(run)(**{**run.__dict__, "model": type(run.model)(run.model.name, run.model.arch,
                                                                    {**run.model.options, **model_overrides})})
    net, process = build(run, shape)
    randomise(net)
    result = SimpleNamespace(ema=net, model=net, process=process, history={"step": [], "loss": []})
    save_torch(path, checkpoint_dict(run, result, shape, seed=0))
    return path


@pytest.mark.parametrize("shape,options,out_mult", [
    ((1, 8, 8), {"preset": "digits-cpu"}, 1),
    ((3, 16, 16), {"base_channels": 32, "channel_mult": (1, 2), "num_res_blocks": 2, "attn_resolutions": (8, 16),
                   "num_groups": 8, "dropout": 0.0}, 2),
    ((3, 32, 32), {"preset": "ddpm-cifar10"}, 1),
], ids=["digits", "learned-range-attn-everywhere", "ddpm-cifar10"])
def test_the_exported_unet2dmodel_gives_our_networks_output(shape, options, out_mult):
    from diffrepro.nets.unet import UNet

    ours = randomise(UNet(data_shape=shape, out_mult=out_mult, **options)).eval()
    theirs = UNet2DModel(**unet_config(ours.config, shape, out_mult)).eval()
    theirs.load_state_dict(to_diffusers_state(ours.state_dict()), strict=True)
    assert sum(p.numel() for p in theirs.parameters()) == sum(p.numel() for p in ours.parameters())
    if options.get("preset") == "ddpm-cifar10":
        assert sum(p.numel() for p in theirs.parameters()) == 35_746_307
    gen = torch.Generator().manual_seed(1)
    x = torch.randn((3, *shape), generator=gen)
    t = torch.tensor([0, 17, 999])
    with torch.no_grad():
        a, b = ours(x, t), theirs(x, t).sample
    assert a.abs().max() > 0.1  # random weights: a real output, not zeros
    assert float((a - b).abs().max() / a.abs().max()) <= 1e-5


CASES = {  # (diffusion overrides, sample.clip_denoised) -> what the scheduler must say
    "eps-fixed-large-clip": (dict(mean_type="epsilon", var_type="fixed_large"), True),
    "x0-fixed-small": (dict(mean_type="start_x", var_type="fixed_small"), False),
    "eps-learned-range": (dict(mean_type="epsilon", var_type="learned_range"), True),
    "cosine-trained-betas": (dict(schedule="cosine", var_type="fixed_small"), True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_exported_run_has_our_schedule_and_ddpmpipeline_draws_our_samples(tmp_path, case):
    from diffrepro.interop.diffusers import export

    diffusion, clip = CASES[case]
    raw, run = tiny_run(**diffusion)
    run = type(run)(**{**run.__dict__, "sample": type(run.sample)(**{**run.sample.__dict__, "clip_denoised": clip})})
    model = write_checkpoint(tmp_path / "model.pt", run, (1, 8, 8))
    out = tmp_path / "exported"
    export(model, out)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["diffrepro.json", "model_index.json", "scheduler/scheduler_config.json", "unet/config.json",
                     "unet/diffusion_pytorch_model.safetensors"]
    config = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert config["prediction_type"] == {"epsilon": "epsilon", "start_x": "sample"}[run.diffusion.mean_type]
    assert config["variance_type"] == run.diffusion.var_type and config["clip_sample"] is clip
    trained = TrainedRun.open(model, torch.device("cpu"))
    ours = trained.process.consts.alphas_cumprod
    # the folder carries the schedule exactly: named where diffusers' linspace is ours, else every β
    if run.diffusion.schedule == "linear":
        assert config["trained_betas"] is None
        betas = np.linspace(config["beta_start"], config["beta_end"], config["num_train_timesteps"])
    else:
        betas = np.asarray(config["trained_betas"], dtype=np.float64)
    assert np.max(np.abs(np.cumprod(1 - betas) - ours) / ours) <= 1e-12
    # diffusers itself computes in float32 (1 − β of a β near 1 keeps few digits): equal to float32's precision
    sched = DDPMScheduler.from_pretrained(out / "scheduler")
    assert np.allclose(sched.alphas_cumprod.double().numpy(), ours, rtol=1e-6, atol=1e-7)
    # the same noise sequence (x_T, then one draw per step t > 0) through both samplers
    pipe = DDPMPipeline.from_pretrained(out)
    n, T = 3, trained.process.num_timesteps
    theirs = pipe(batch_size=n, generator=torch.Generator().manual_seed(7), num_inference_steps=T,
                  output_type="np").images
    x = sample(trained.process, trained.model, (n, 1, 8, 8), generator=torch.Generator().manual_seed(7),
               progress=False, clip_denoised=clip)
    mine = (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert mine.std() > 0.05  # real samples, not a constant
    assert np.abs(theirs - mine).max() <= 1e-4


def test_export_command_writes_a_folder_and_states_what_it_drops(tmp_path):
    _, run = tiny_run()
    model = write_checkpoint(tmp_path / "model.pt", run, (1, 8, 8))
    proc = run_cli("export", "--format", "diffusers", "--model", model, "--out", tmp_path / "out", check=True)
    notes = [line for line in proc.stderr.splitlines() if "note:" in line]
    assert len(notes) == 1 and "17 levels" in notes[0]  # the digits' decoder: stated, not silently dropped
    provenance = json.loads((tmp_path / "out" / "diffrepro.json").read_text())
    assert provenance["run"] == "digits-tiny" and len(provenance["source_sha256"]) == 64
    # an earlier export is replaced whole
    run_cli("export", "--format", "diffusers", "--model", model, "--out", tmp_path / "out", check=True)
    assert (tmp_path / "out" / "model_index.json").is_file()


def _refused(proc, *fragments):
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[0].startswith("diffrepro export: error:") and all(f in lines[0] for f in fragments), lines[0]


@pytest.mark.parametrize("case", ["sd2015", "previous_x", "no-conv-resampling", "foreign-folder"])
def test_what_diffusers_cannot_express_is_refused_in_one_line_writing_nothing(tmp_path, case):
    out = tmp_path / "out"
    if case == "sd2015":
        _, run = tiny_run("toyroll-sd")
        model, fragments = write_checkpoint(tmp_path / "model.pt", run, (2,)), ("sd_gaussian", "allowed: family ddpm")
    elif case == "previous_x":
        _, run = tiny_run(mean_type="previous_x")
        model, fragments = write_checkpoint(tmp_path / "model.pt", run, (1, 8, 8)), ("previous_x", "allowed")
    elif case == "no-conv-resampling":
        _, run = tiny_run()
        model = write_checkpoint(tmp_path / "model.pt", run, (1, 8, 8), model_overrides={"resample_with_conv": False})
        fragments = ("resample_with_conv", "allowed: true")
    else:
        _, run = tiny_run()
        model, fragments = write_checkpoint(tmp_path / "model.pt", run, (1, 8, 8)), ("other files", str(out))
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    if case == "foreign-folder":  # through the command: its one line
        _refused(run_cli("export", "--format", "diffusers", "--model", model, "--out", out), *fragments)
    else:  # in-process (the command prints the same message on its one line)
        from diffrepro.interop.diffusers import export

        with pytest.raises(InputError) as err:
            export(model, out)
        assert "\n" not in str(err.value) and all(f in str(err.value) for f in fragments), str(err.value)
    if case == "foreign-folder":
        assert [p.name for p in out.iterdir()] == ["notes.txt"]
    else:
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temporary left behind


def test_safetensors_export_round_trips_without_pickle(tmp_path):
    from diffrepro.interop.safetensors import load

    _, run = tiny_run()
    model = write_checkpoint(tmp_path / "model.pt", run, (1, 8, 8))
    run_cli("export", "--format", "safetensors", "--model", model, "--out", tmp_path / "m.safetensors", check=True)
    assert json.loads((tmp_path / "m.json").read_text())["config"]["name"] == "digits-tiny"
    ckpt = load(tmp_path / "m.safetensors")
    a, b = TrainedRun.open(model, torch.device("cpu")), TrainedRun.open(tmp_path / "m.safetensors", torch.device("cpu"))
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert set(ckpt["model"]) == set(a.model.state_dict())
    # a safetensors file that is not ours: one line naming it
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(InputError, match="not a diffrepro model"):
        TrainedRun.open(tmp_path / "other.safetensors", torch.device("cpu"))
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "m.safetensors").read_bytes()[:100])
    with pytest.raises(InputError, match="cut.safetensors"):
        TrainedRun.open(tmp_path / "cut.safetensors", torch.device("cpu"))


def test_generate_writes_pngs_and_an_npz_fid_tools_read(tmp_path):
    from PIL import Image

    _, run = tiny_run()
    model = write_checkpoint(tmp_path / "model.pt", run, (1, 8, 8))
    out = tmp_path / "gen"
    run_cli("generate", "--model", model, "--n", 5, "--batch-size", 2, "--sampler", "ddim", "--steps", 5, "--out",
            out, check=True)
    arr = np.load(out / "samples.npz")["arr_0"]
    assert arr.shape == (5, 8, 8, 1) and arr.dtype == np.uint8 and arr.std() > 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 5 and np.array_equal(np.asarray(Image.open(pngs[3])), arr[3, ..., 0])
    again = tmp_path / "again"
    run_cli("generate", "--model", model, "--n", 5, "--batch-size", 2, "--sampler", "ddim", "--steps", 5, "--out",
            again, check=True)
    assert np.array_equal(np.load(again / "samples.npz")["arr_0"], arr)  # same seed, same samples
    half = tmp_path / "bf16"  # the network under bf16 autocast: the same walk, images of the same kind
    run_cli("generate", "--model", model, "--n", 5, "--batch-size", 2, "--sampler", "ddim", "--steps", 5, "--out",
            half, "--precision", "bf16", check=True)
    assert np.load(half / "samples.npz")["arr_0"].shape == arr.shape
    for bad, fragment in ((["--n", "0"], "--n = 0"), (["--n", "2", "--steps", "99"], "--steps = 99"),
                          (["--n", "2", "--precision", "fp16"], "--precision")):
        proc = run_cli("generate", "--model", model, "--out", tmp_path / "bad", *bad)
        lines = [line for line in proc.stderr.splitlines() if "error" in line]
        assert proc.returncode == 2 and len(lines) == 1 and fragment in lines[0], proc.stderr
        assert not (tmp_path / "bad").exists()
    assert run_cli("--version").stdout.startswith("diffrepro ")


def google_like_folder(folder: Path, timesteps: int, seed: int = 0) -> UNet2DModel:
    """A random-init UNet2DModel in google/ddpm-cifar10-32's configuration, saved with save_pretrained
    beside the run's scheduler (T made small)."""
    torch.manual_seed(seed)
    unet = randomise(UNet2DModel(**GOOGLE_CIFAR10_UNET), seed, scale=0.02).eval()
    sched = DDPMScheduler(num_train_timesteps=timesteps, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                          variance_type="fixed_large", clip_sample=True)
    DDPMPipeline(unet=unet, scheduler=sched).save_pretrained(folder)
    return unet


def test_an_imported_folder_that_does_not_fit_is_refused_in_one_line(tmp_path):
    from diffrepro.nets.diffusers_unet import DiffusersUNet

    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="is not a diffusers model folder"):
        DiffusersUNet((3, 32, 32), path=str(tmp_path / "empty"))
    folder = tmp_path / "theirs"
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 8),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4, layers_per_block=1)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=10, beta_start=1e-3, beta_end=0.5,
                                                    variance_type="fixed_large")).save_pretrained(folder)
    with pytest.raises(InputError, match=r"shape \(1, 8, 8\).*shape \(3, 32, 32\)"):
        DiffusersUNet((3, 32, 32), path=str(folder))
    with pytest.raises(InputError, match="outputs 1 channels; this run's process needs 2"):
        DiffusersUNet((1, 8, 8), out_mult=2, path=str(folder))
    pickled = tmp_path / "pickled"  # weights saved as a .bin (a pickle): never loaded
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=10)).save_pretrained(
        pickled, safe_serialization=False)
    assert (pickled / "unet" / "diffusion_pytorch_model.bin").is_file()
    with pytest.raises(InputError, match="could not be read with safetensors.*a .bin holds a pickle"):
        DiffusersUNet((1, 8, 8), path=str(pickled))
    raw, _ = tiny_run()
    raw["models"]["theirs"] = {"arch": "diffusers", "path": str(folder)}
    raw["runs"]["digits-tiny"]["model"] = "theirs"
    raw["runs"]["digits-tiny"]["diffusion"]["var_type"] = "fixed_small"
    with pytest.raises(InputError, match=r"var_type = 'fixed_small'.*'fixed_large'.*allowed: fixed_large"):
        build(parse_params(raw).run("digits-tiny"), (1, 8, 8))
    raw["runs"]["digits-tiny"]["diffusion"].update(var_type="fixed_large", beta_end=0.4)
    with pytest.raises(InputError, match="β schedule differs"):
        build(parse_params(raw).run("digits-tiny"), (1, 8, 8))


class _Direct(torch.nn.Module):
    """The diffusers model called as diffusers calls it: unet(x_t, t).sample (the imported model's chain,
    built beside DDPM's own CIFAR-10 run: tests/test_paper_chain.py)."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x, t):
        return self.unet(x, t).sample


def test_an_import_that_cannot_work_stops_in_one_line_before_any_job(tmp_path, tiny_raw):
    """Through the engines and the stage command: not a diffusers folder (when the pipeline is planned),
    a model of another size (when the train stage builds it): one line naming the key, nothing written."""
    import subprocess

    from .conftest import BIN, copy_pipeline_files, stage_args

    (tmp_path / "not-a-model").mkdir()
    tiny_raw["models"]["theirs"] = {"arch": "diffusers", "path": str(tmp_path / "not-a-model")}
    tiny_raw["runs"]["digits-tiny"].update(model="theirs")
    tiny_raw["runs"]["digits-tiny"]["train"].update(steps=0, keep_steps=[])
    project = tmp_path / "p"
    project.mkdir()
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_raw))
    copy_pipeline_files(project, params)
    proc = subprocess.run([str(BIN / "snakemake"), "-n", "--cores", "1"], cwd=project, capture_output=True, text=True)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1, lines
    assert lines[0].startswith("diffrepro: error:") and "models.theirs.path" in lines[0] \
        and "is not a diffusers model folder" in lines[0], lines[0]

    folder = tmp_path / "cifar-sized"  # a 3 x 32 x 32 model for 1 x 8 x 8 digits
    DDPMPipeline(unet=UNet2DModel(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(8, 8),
                                  down_block_types=("DownBlock2D", "DownBlock2D"),
                                  up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4, layers_per_block=1),
                 scheduler=DDPMScheduler(num_train_timesteps=10, beta_start=1e-3, beta_end=0.5,
                                         variance_type="fixed_large")).save_pretrained(folder)
    tiny_raw["models"]["theirs"]["path"] = str(folder)
    params.write_text(yaml.safe_dump(tiny_raw))
    run_cli("prepare", *stage_args("prepare", "tinydigits", project, params), check=True)
    proc = run_cli("train", *stage_args("train", "digits-tiny", project, params))
    lines = [line for line in proc.stderr.splitlines() if line.startswith("diffrepro train: error:")]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "(3, 32, 32)" in lines[0] and "(1, 8, 8)" in lines[0], lines[0]
    assert not (project / "results" / "runs" / "digits-tiny").exists() or \
        not list((project / "results" / "runs" / "digits-tiny").glob("model.*"))
