"""The user-facing pipelines (through `transformers.pipeline`) and the `neurorvq generate / reconstruct` CLI."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import pipeline

import neurorvq.pipelines  # noqa: F401  registers the tasks
from neurorvq.lbm import LBMForCausalLM
from neurorvq.pipelines.cli import main
from neurorvq.tokenizer import NeuroRVQTokenizer


@pytest.fixture(scope="module")
def generator():
    """The previous bundle, the depth-wise LBM (its own per-stream temperature profile)."""
    return pipeline("eeg-generation", model=LBMForCausalLM.from_pretrained("neurorvq/lbm-small-depthwise"), device="cpu")


@pytest.fixture(scope="module")
def spatial():
    """The bundled spatial LBM (`pipeline("eeg-generation")`'s default)."""
    return pipeline("eeg-generation", device="cpu")


@pytest.fixture(scope="module")
def recording(eeg_dir):
    return str(eeg_dir / "eegmat" / "Subject00_1.edf")


def test_default_pipeline_is_bundled():
    pipe = pipeline("eeg-generation", device="cpu")
    out = pipe(seconds=1, channel_names=["fp1", "cz"], seed=0)
    assert out["eeg"].shape == (2, 200) and out["sampling_rate"] == 200 and out["channel_names"] == ["fp1", "cz"]


def test_generation_output_and_seeds(generator):
    a = generator(seconds=2, montage="standard_1020", seed=1)
    b = generator(seconds=2, montage="standard_1020", seed=1)
    c = generator(seconds=2, montage="standard_1020", seed=2)
    assert a["eeg"].shape == (19, 400) and a["eeg"].dtype == np.float32 and np.isfinite(a["eeg"]).all()
    assert len(a["channel_names"]) == 19
    np.testing.assert_array_equal(a["eeg"], b["eeg"])
    assert not np.allclose(a["eeg"], c["eeg"])
    several = generator(num_patches=1, channel_names="c3,c4", seed=0, num_samples=2, return_raw=True)
    assert isinstance(several, list) and len(several) == 2
    assert several[0]["raw"].ch_names == ["C3", "C4"]
    np.testing.assert_allclose(several[0]["raw"].get_data() * 1e6, several[0]["eeg"], rtol=1e-5, atol=1e-3)


def test_slow_temperature_changes_only_what_it_should(generator):
    same = generator(seconds=2, channel_names=["c3", "cz", "c4"], seed=3, slow_temperature=None)
    again = generator(seconds=2, channel_names=["c3", "cz", "c4"], seed=3)
    np.testing.assert_array_equal(same["eeg"], again["eeg"])
    cold = generator(seconds=2, channel_names=["c3", "cz", "c4"], seed=3, slow_temperature=0.0)
    assert cold["eeg"].shape == (3, 400) and np.isfinite(cold["eeg"]).all()
    assert not np.allclose(cold["eeg"], same["eeg"])


def test_prompt_continuation_keeps_the_prompt(generator, recording):
    from neurorvq.tokenizer.metrics import zscored_mse

    outs = generator(recording, prompt_seconds=3, seconds=2, seed=0, num_samples=8)
    out = outs[0]
    names = out["channel_names"]
    assert out["prompt_seconds"] == 3 and out["eeg"].shape == (len(names), 5 * 200)
    # the prompt's codes are those of the recording (a lapped tokenizer reads one more second and drops its code,
    # whose frame would be windowed as an end frame)
    tokens = pipeline("eeg-tokenization", model=generator.eeg_tokenizer, device="cpu")(recording, max_seconds=4)
    assert tokens["channel_names"] == names
    own = generator.eeg_tokenizer.decode(tokens["codes"][..., :3], names, scale_codes=tokens["scale_codes"][..., :3],
                                         normalize_phase=True)[0].numpy()
    # up to 2.5 s no frame of the continuation overlaps: the prompt decodes as itself (the refiner, which sees the
    # whole window, may move it a little)
    assert zscored_mse(own[:, :500], out["eeg"][:, :500]) < 0.02
    # no jump at the join in a typical continuation: the step into it is like the steps inside it (single draws can
    # jump: the bundled model's share of joins above 3x is in its model card)
    ratios = []
    for sample in outs:
        steps = np.diff(sample["eeg"], axis=-1) ** 2
        ratios.append(np.median(steps[:, 599]) / np.median(steps[:, 600:]))
    assert np.median(ratios) < 3, ratios


def test_reconstruction_pipeline(recording):
    reconstructor = pipeline("eeg-reconstruction", model=NeuroRVQTokenizer.from_pretrained("neurorvq/tokenizer-small"),
                             device="cpu")
    rec = reconstructor(recording, max_seconds=5)
    assert rec["original"].shape == rec["reconstruction"].shape == (19, 1000)
    assert rec["zscored_mse"] < 1.0 and rec["pcc"] > 0.5
    # noise filling: the energy the codes lost comes back as (seeded) detail, at a higher squared error
    filled = [reconstructor(recording, max_seconds=5, noise_filling=True) for _ in range(2)]
    np.testing.assert_array_equal(filled[0]["reconstruction"], filled[1]["reconstruction"])
    assert rec["zscored_mse"] < filled[0]["zscored_mse"] < 2 * rec["zscored_mse"] + 0.05
    assert filled[0]["reconstruction"].std() > rec["reconstruction"].std()


@pytest.mark.parametrize("kwargs", [{"montage": "nope"}, {"seconds": 0}, {"seconds": -3},
                                    {"channel_names": ["fp1", "notachannel"]}, {"bogus": 1},
                                    {"slow_temperature": -1.0}, {"slow_temperature": float("inf")}])
def test_bad_arguments_raise(generator, kwargs):
    with pytest.raises(ValueError):
        generator(**{"seconds": 1, **kwargs})


def test_bundled_model_generates_named_conditions(generator):
    assert generator.model.config.condition_names == ["arithmetic", "eyes_closed", "eyes_open", "rest"]
    samples = generator(seconds=1, channel_names=["o1", "o2"], condition="eyes_closed", num_samples=3, seed=0)
    assert isinstance(samples, list) and len(samples) == 3 and all(s["eeg"].shape == (2, 200) for s in samples)
    guided = generator(seconds=1, channel_names=["o1", "o2"], condition="eyes_closed", guidance_scale=2.0, seed=0)
    assert np.isfinite(guided["eeg"]).all() and not np.allclose(guided["eeg"], samples[0]["eeg"])
    with pytest.raises(ValueError, match="unknown condition 'asleep'.*arithmetic, eyes_closed, eyes_open, rest"):
        generator(seconds=1, condition="asleep")
    with pytest.raises(ValueError, match="guidance_scale needs a condition"):
        generator(seconds=1, guidance_scale=2.0)


def test_cli_generate_writes_edf_and_png(tmp_path):
    import mne

    edf, png = tmp_path / "synth.edf", tmp_path / "synth.png"
    assert main(["generate", "--seconds", "3", "--montage", "standard_1020", "--out", str(edf), "--plot", str(png),
                 "--seed", "0"]) == 0
    raw = mne.io.read_raw_edf(edf, preload=True, verbose=False)
    assert raw.ch_names[:3] == ["Fp1", "Fp2", "F7"] and len(raw.ch_names) == 19
    assert raw.info["sfreq"] == 200 and raw.n_times == 3 * 200
    assert png.is_file() and png.stat().st_size > 10_000
    fif = tmp_path / "synth_raw.fif"
    assert main(["generate", "--seconds", "1", "--channels", "c3,c4", "--out", str(fif)]) == 0
    assert mne.io.read_raw_fif(fif, verbose=False).ch_names == ["C3", "C4"]
    flat = tmp_path / "flat.edf"
    assert main(["generate", "--seconds", "1", "--channels", "c3,c4", "--out", str(flat), "--stream-temperatures",
                 ",".join(["0.9"] * 18)]) == 0
    # one temperature per stream, or exit code 2 with a line that says so
    assert main(["generate", "--seconds", "1", "--out", str(tmp_path / "bad.edf"), "--stream-temperatures", "0.9,0.9"]) == 2
    assert not (tmp_path / "bad.edf").exists()


def test_cli_reconstruct(tmp_path, recording):
    out = tmp_path / "recon.edf"
    assert main(["reconstruct", recording, "--out", str(out), "--max-seconds", "3", "--plot",
                 str(tmp_path / "r.png")]) == 0
    assert out.is_file() and (tmp_path / "r.png").is_file()
    assert main(["reconstruct", recording, "--out", str(tmp_path / "filled.edf"), "--max-seconds", "3",
                 "--noise-filling"]) == 0


@pytest.mark.parametrize("argv", [["generate", "--seconds", "0", "--out", "x.edf"],
                                  ["generate", "--seconds", "2", "--montage", "nope", "--out", "x.edf"],
                                  ["generate", "--seconds", "2", "--out", "x.txt"],
                                  ["generate", "--seconds", "2", "--condition", "asleep", "--out", "x.edf"]])
def test_cli_bad_arguments_exit_2(argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        raise SystemExit(main(argv))
    assert info.value.code == 2


def test_cli_unmasking_choices_are_the_models():
    """The CLI's parser stays free of torch, so it lists the unmasking orders itself: they must be the model's."""
    from neurorvq.lbm.modeling_lbm_spatial import UNMASKING
    from neurorvq.pipelines.cli import build_parser

    generate = build_parser()._subparsers._group_actions[0].choices["generate"]
    unmasking = next(action for action in generate._actions if action.dest == "unmasking")
    assert tuple(unmasking.choices) == UNMASKING


def test_stream_temperatures_replace_the_models_profile(generator):
    model = generator.model
    assert model.config.stream_temperature_scales is not None  # the bundle's own profile
    profiled = generator(seconds=1, channel_names=["c3", "c4"], seed=5, temperature=0.8)
    explicit = generator(seconds=1, channel_names=["c3", "c4"], seed=5,
                         stream_temperatures=model.config.stream_temperatures(0.8))
    np.testing.assert_array_equal(profiled["eeg"], explicit["eeg"])
    flat = generator(seconds=1, channel_names=["c3", "c4"], seed=5, stream_temperatures=[0.8] * model.num_streams)
    assert not np.allclose(flat["eeg"], profiled["eeg"])
    with pytest.raises(ValueError, match="one temperature per stream"):
        generator(seconds=1, channel_names=["c3"], stream_temperatures=[0.8, 0.8])
    with pytest.raises(ValueError, match="not both"):
        generator(seconds=1, channel_names=["c3"], stream_temperatures=[0.8] * model.num_streams, slow_temperature=0.5)


def test_the_default_pipeline_samples_the_spatial_lbm_with_its_saved_defaults(spatial):
    """`pipeline("eeg-generation")` is the spatial LBM; a call without sampling options uses the model's saved
    generation config, and passing those very values gives the same EEG, bit for bit."""
    from neurorvq.lbm import LBMForSpatialGeneration

    assert isinstance(spatial.model, LBMForSpatialGeneration)
    defaults = spatial.model.generation_config
    plain = spatial(seconds=2, montage="standard_1020", seed=4)
    explicit = spatial(seconds=2, montage="standard_1020", seed=4, temperature=defaults.temperature,
                       num_rounds=defaults.num_rounds, unmasking=defaults.unmasking)
    np.testing.assert_array_equal(plain["eeg"], explicit["eeg"])
    assert plain["eeg"].shape == (19, 400) and np.isfinite(plain["eeg"]).all()
    assert 1 < float(np.median(plain["eeg"].std(-1))) < 200  # microvolts
    other = spatial(seconds=2, montage="standard_1020", seed=4, num_rounds=defaults.num_rounds + 4)
    assert not np.allclose(other["eeg"], plain["eeg"])


def test_spatial_lbm_prompt_conditions_and_64_channels(spatial, recording):
    outs = spatial(recording, prompt_seconds=3, seconds=2, seed=0, num_samples=2)
    assert outs[0]["prompt_seconds"] == 3 and outs[0]["eeg"].shape[-1] == 5 * 200
    names = spatial.model.config.condition_names
    assert "rest" in names and "arithmetic" in names
    guided = spatial(seconds=1, channel_names=["o1", "o2"], condition="rest", guidance_scale=2.0, seed=0)
    assert np.isfinite(guided["eeg"]).all()
    montage_64 = ("fc5,fc3,fc1,fcz,fc2,fc4,fc6,c5,c3,c1,cz,c2,c4,c6,cp5,cp3,cp1,cpz,cp2,cp4,cp6,fp1,fpz,fp2,af7,af3,"
                  "afz,af4,af8,f7,f5,f3,f1,fz,f2,f4,f6,f8,ft7,ft8,t7,t8,t9,t10,tp7,tp8,p7,p5,p3,p1,pz,p2,p4,p6,p8,po7,"
                  "po3,poz,po4,po8,o1,oz,o2,iz").split(",")
    wide = spatial(seconds=6, channel_names=montage_64, seed=1)  # longer than its 4-s context at 64 channels
    assert wide["eeg"].shape == (64, 1200) and np.isfinite(wide["eeg"]).all()


def test_options_of_the_spatial_lbm_are_refused_for_the_depthwise_one(generator):
    with pytest.raises(ValueError, match="num_rounds: only a spatial LBM"):
        generator(seconds=1, channel_names=["c3"], num_rounds=4)
