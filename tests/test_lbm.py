"""LBM: exact code layouts, learning, KV cache, generation (sliding, reproducible, decodable), save/load, bad input.

Models here are tiny (hidden 32) and codes are synthetic; real-data tests live elsewhere.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from neurorvq.lbm import (
    CodeLayout,
    LBMConfig,
    LBMForCausalLM,
    channel_and_time_ids,
    codes_to_positions,
    flat_to_positions,
    positions_to_codes,
    positions_to_flat,
    stream_offsets,
)
from neurorvq.lbm.modeling_lbm import sample_logits, top_k_filter, top_p_filter
from neurorvq.tokenizer import NeuroRVQConfig, NeuroRVQTokenizer

from .conftest import REPO_ROOT

CONFIGS = REPO_ROOT / "configs" / "lbm"
TOKENIZER_TINY = REPO_ROOT / "configs" / "tokenizer" / "tiny.json"
LAYOUTS = ("flattened", "depthwise")
# a small code alphabet keeps the tests fast: S=2, K=2, 16 codes, 8 scale levels -> M = 6 streams
SMALL_CODES = dict(num_scales=2, num_quantizers=2, codebook_size=16, num_scale_tokens=8)
CHANNELS = ["fp1", "cz", "o2"]

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(layout_name: str, **overrides) -> LBMConfig:
    values = json.loads((CONFIGS / f"tiny-{layout_name}.json").read_text())
    values.pop("model_type")
    values.update(SMALL_CODES)
    values.update(overrides)
    return LBMConfig(**values)


def tiny_model(layout: str, seed: int = 0, **overrides) -> LBMForCausalLM:
    torch.manual_seed(seed)
    return LBMForCausalLM(tiny_config(layout, **overrides)).eval()


def structured_batch(batch: int = 4, channels: int = 3, patches: int = 4):
    """Codes with a learnable pattern: each code depends on (sample, scale, stage, channel, patch parity)."""
    s, k, v, t = (SMALL_CODES[n] for n in ("num_scales", "num_quantizers", "codebook_size", "num_scale_tokens"))
    b_, s_, k_, c_, a_ = torch.meshgrid(*(torch.arange(n) for n in (batch, s, k, channels, patches)), indexing="ij")
    codes = (3 * c_ + 5 * s_ + 7 * k_ + 4 * (a_ % 2) + b_) % v
    b_, w_, c_, a_ = torch.meshgrid(*(torch.arange(n) for n in (batch, 2, channels, patches)), indexing="ij")
    scale_codes = (2 * c_ + 3 * w_ + (a_ % 2) + b_) % t
    channel_indices = torch.tensor([[55, 36, 64]])[:, :channels].expand(batch, -1)
    channel_ids, time_ids = channel_and_time_ids(channel_indices, patches)
    return codes_to_positions(codes, scale_codes), channel_ids, time_ids


# ---- layout ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_scale", [True, False])
def test_codes_positions_round_trip_is_exact_and_ordered(with_scale):
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        b, s, k, c, a = (int(x) for x in torch.randint(1, 5, (5,), generator=generator))
        codes = torch.randint(0, 100, (b, s, k, c, a), generator=generator)
        scale = torch.randint(0, 7, (b, 2, c, a), generator=generator) if with_scale else None
        positions = codes_to_positions(codes, scale)
        extra = 2 if with_scale else 0
        assert positions.shape == (b, a * c, s * k + extra)
        # documented order: time-major positions, scale streams first, then scale-major, stage-minor codes
        bi, si, ki, ci, ai = (int(torch.randint(0, n, (1,), generator=generator)) for n in (b, s, k, c, a))
        assert positions[bi, ai * c + ci, extra + si * k + ki] == codes[bi, si, ki, ci, ai]
        if with_scale:
            assert positions[bi, ai * c + ci, 0] == scale[bi, 0, ci, ai]
            assert positions[bi, ai * c + ci, 1] == scale[bi, 1, ci, ai]
        back, back_scale = positions_to_codes(positions, c, s, k, with_scale)
        assert torch.equal(back, codes)
        assert (back_scale is None) if not with_scale else torch.equal(back_scale, scale)


@pytest.mark.parametrize("with_scale", [True, False])
def test_positions_flat_round_trip_is_exact(with_scale):
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        s, k = (int(x) for x in torch.randint(1, 4, (2,), generator=generator))
        layout = CodeLayout(s, k, int(torch.randint(2, 50, (1,), generator=generator)), 9 if with_scale else 0)
        sizes = torch.tensor(layout.stream_vocab_sizes)
        b, p = (int(x) for x in torch.randint(1, 6, (2,), generator=generator))
        positions = (torch.rand(b, p, layout.num_streams, generator=generator) * sizes).long()
        offsets = stream_offsets(layout.stream_vocab_sizes)
        assert torch.equal(offsets, layout.offsets())
        flat = positions_to_flat(positions, offsets)
        assert flat.shape == (b, p * layout.num_streams)
        assert int(flat.max()) < layout.vocab_size and flat[0, layout.num_streams - 1] == (
            offsets[-1] + positions[0, 0, -1])
        assert torch.equal(flat_to_positions(flat, offsets, layout.num_streams), positions)
    layout = CodeLayout(2, 2, 16, 8)
    offsets = layout.offsets()
    flat = positions_to_flat(torch.zeros(1, 2, 6, dtype=torch.long), offsets)
    flat[0, 0] = offsets[1]  # stream 0's slot holds stream 1's first token
    with pytest.raises(ValueError):
        flat_to_positions(flat, offsets, 6)
    with pytest.raises(ValueError):  # not a whole number of positions
        flat_to_positions(flat[:, :-1], offsets, 6)


def test_channel_and_time_ids_are_time_major():
    channel_ids, time_ids = channel_and_time_ids(torch.tensor([[5, 9, 2], [1, 2, 3]]), 2)
    assert channel_ids.tolist() == [[5, 9, 2, 5, 9, 2], [1, 2, 3, 1, 2, 3]]
    assert time_ids.tolist() == [[0, 0, 0, 1, 1, 1]] * 2


def test_code_layout_from_tokenizer_config():
    config = NeuroRVQConfig.from_json_file(str(TOKENIZER_TINY))
    assert CodeLayout.from_tokenizer_config(config) == CodeLayout(4, 4, 32, 0)
    config.amplitude_side_information = "scale_tokens"
    layout = CodeLayout.from_tokenizer_config(config)
    assert layout.num_streams == 18 and layout.stream_vocab_sizes[:3] == [256, 256, 32]
    assert layout.vocab_size == 2 * 256 + 16 * 32
    assert layout.stream_names[:3] == ["scale_mean", "scale_std", "s0k0"]
    lbm_config = LBMConfig.from_tokenizer_config(config, layout="flattened", hidden_size=32, num_heads=2)
    assert lbm_config.code_layout == layout and lbm_config.channel_vocabulary == config.channel_vocabulary


@pytest.mark.parametrize("field,value", [("layout", "sideways"), ("num_heads", 3), ("num_scale_tokens", 1),
                                         ("dropout", 1.0), ("max_positions", 0), ("depth_heads", 5),
                                         ("channel_vocab_size", 10)])
def test_config_rejects_invalid_values(field, value):
    with pytest.raises(ValueError, match=field):
        tiny_config("depthwise", **{field: value})


# ---- learning ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_loss_falls_on_structured_codes(layout):
    model = tiny_model(layout).train()
    positions, channel_ids, time_ids = structured_batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = model(positions, channel_ids, time_ids, labels=True).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert math.isfinite(losses[-1])
    # near uniform at initialisation (depth-wise: code embeddings at std d^-1/2 give logits of std ~1, so a little above)
    assert math.log(16) * 0.85 < losses[0] < math.log(16) + (1.0 if layout == "depthwise" else 0.4)
    assert losses[-1] < 0.5 * losses[0], losses


def test_position_mask_ignores_padding():
    model = tiny_model("depthwise")
    positions, channel_ids, time_ids = structured_batch(batch=1)
    real = 7
    padded = positions.clone()
    padded[:, real:] = 0
    mask = torch.arange(positions.shape[1])[None] < real
    masked = model(padded, channel_ids, time_ids, labels=True, position_mask=mask).loss
    prefix = model(positions[:, :real], channel_ids[:, :real], time_ids[:, :real], labels=True).loss
    assert torch.allclose(masked, prefix, atol=1e-6)
    other = padded.clone()
    other[:, real:] = 5
    assert torch.equal(model(other, channel_ids, time_ids, labels=True, attention_mask=mask.long()).loss, masked)
    labels = positions.clone()
    labels[:, real:] = -100  # the same through a labels tensor
    assert torch.equal(model(padded, channel_ids, time_ids, labels=labels).loss, masked)


# ---- KV cache ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_cached_logits_match_uncached_step_by_step(layout):
    model = tiny_model(layout)
    positions, channel_ids, time_ids = structured_batch(batch=2)
    full = model(positions, channel_ids, time_ids).logits
    assert full.shape == (2, positions.shape[1], 6, 16)
    assert torch.isinf(full[..., :2, 8:]).all() and torch.isfinite(full[..., :2, :8]).all()  # scale streams: 8 codes
    cache, steps = None, []
    for p in range(positions.shape[1]):
        out = model(positions[:, p:p + 1], channel_ids[:, p:p + 1], time_ids[:, p:p + 1], cache=cache, use_cache=True)
        cache = out.cache
        steps.append(out.logits)
    finite = torch.isfinite(full)
    assert torch.allclose(torch.cat(steps, 1)[finite], full[finite], atol=1e-5)
    # chunks, and the pre-v5 `past_key_values` name
    first = model(positions[:, :3], channel_ids[:, :3], time_ids[:, :3], use_cache=True)
    rest = model(positions[:, 3:], channel_ids[:, 3:], time_ids[:, 3:], past_key_values=first.cache)
    assert torch.allclose(rest.logits[finite[:, 3:]], full[:, 3:][finite[:, 3:]], atol=1e-5)


# ---- generation --------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_generate_shapes_prompt_and_seeds(layout):
    model = tiny_model(layout)
    positions, _, _ = structured_batch(batch=2, patches=2)
    prompt, prompt_scale = positions_to_codes(positions, 3, 2, 2, True)
    run = lambda seed, **kw: model.generate(CHANNELS, 3, prompt_codes=prompt, prompt_scale_codes=prompt_scale,  # noqa: E731
                                            generator=torch.Generator().manual_seed(seed), **kw)
    out = run(0)
    codes, scale = out["codes"], out["scale_codes"]
    assert codes.shape == (2, 2, 2, 3, 5) and scale.shape == (2, 2, 3, 5)
    assert codes.dtype == torch.long and 0 <= int(codes.min()) and int(codes.max()) < 16
    assert 0 <= int(scale.min()) and int(scale.max()) < 8
    assert torch.equal(codes[..., :2], prompt) and torch.equal(scale[..., :2], prompt_scale)
    again = run(0)
    assert torch.equal(again["codes"], codes) and torch.equal(again["scale_codes"], scale)
    other = run(1)
    assert not torch.equal(other["codes"], codes)
    # no prompt, index tensor, top-k / top-p, greedy
    alone = model.generate(torch.tensor([55, 36]), 2, batch_size=3, top_k=4, top_p=0.9,
                           generator=torch.Generator().manual_seed(0))
    assert alone["codes"].shape == (3, 2, 2, 2, 2)
    greedy = [model.generate(CHANNELS, 2, temperature=0)["codes"] for _ in range(2)]
    assert torch.equal(*greedy)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_generate_slides_past_max_positions(layout):
    """Window of 2 patches of 3 channels; 1 prompt + 4 generated patches must slide 3 times.

    Cached and uncached generation agree, and (greedy) every generated code is the argmax of the public
    forward over that position's window with time ids re-based to the window start."""
    m = 6
    window_positions = 2 * 3
    model = tiny_model(layout, max_positions=window_positions * (m if layout == "flattened" else 1))
    assert model.config.positions_per_context == window_positions
    positions, _, _ = structured_batch(batch=2, patches=1)
    prompt, prompt_scale = positions_to_codes(positions, 3, 2, 2, True)
    kwargs = dict(prompt_codes=prompt, prompt_scale_codes=prompt_scale)
    seeded = [model.generate(CHANNELS, 4, generator=torch.Generator().manual_seed(3), use_cache=c, **kwargs)
              for c in (True, False)]
    assert seeded[0]["codes"].shape[-1] == 5
    assert torch.equal(seeded[0]["codes"], seeded[1]["codes"])
    assert torch.equal(seeded[0]["scale_codes"], seeded[1]["scale_codes"])

    greedy = model.generate(CHANNELS, 4, temperature=0, **kwargs)
    generated = codes_to_positions(greedy["codes"], greedy["scale_codes"])
    channel_ids, patch_ids = channel_and_time_ids(model.channel_indices(CHANNELS, 2), 5)
    for q in range(3, generated.shape[1]):
        start_patch = max(0, q // 3 - 1)
        window = slice(start_patch * 3, q + 1)
        logits = model(generated[:, window], channel_ids[:, window], patch_ids[:, window] - start_patch).logits
        assert torch.equal(logits[:, -1].argmax(-1), generated[:, q]), q


@pytest.mark.parametrize("layout", LAYOUTS)
def test_generated_codes_decode_to_microvolts(layout):
    torch.manual_seed(0)
    tokenizer_config = NeuroRVQConfig.from_json_file(str(TOKENIZER_TINY))
    tokenizer_config.amplitude_side_information = "scale_tokens"
    tokenizer_config.validate()
    tokenizer = NeuroRVQTokenizer(tokenizer_config).eval()
    values = json.loads((CONFIGS / f"tiny-{layout}.json").read_text())
    keep = ("layout", "hidden_size", "num_layers", "num_heads", "mlp_ratio", "max_positions", "max_patches",
            "depth_hidden_size", "depth_layers", "depth_heads")
    config = LBMConfig.from_tokenizer_config(tokenizer_config, **{k: values[k] for k in keep if k in values})
    assert config.num_streams == 18
    model = LBMForCausalLM(config).eval()
    names = ["fp1", "cz"]
    eeg = torch.randn(1, 2, 2 * 200).cumsum(-1)
    encoded = tokenizer.encode(eeg, names)
    out = model.generate(names, 2, prompt_codes=encoded.codes, prompt_scale_codes=encoded.scale_codes,
                         generator=torch.Generator().manual_seed(0))
    assert out["codes"].shape == (1, 4, 4, 2, 4)
    signal = tokenizer.decode(out["codes"], names, scale_codes=out["scale_codes"])
    assert signal.shape == (1, 2, 4 * 200) and torch.isfinite(signal).all()
    assert signal[..., 400:].abs().max() > 0


def test_sampling_helpers():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    assert torch.isinf(top_k_filter(logits, 2)).tolist() == [[True, False, True, False]]
    # probabilities ~ [0.03, 0.64, 0.09, 0.24]: 0.64 < 0.8 so the nucleus needs the top two
    assert torch.isinf(top_p_filter(logits, 0.8)).tolist() == [[True, False, True, False]]
    assert torch.isinf(top_p_filter(logits, 0.5)).tolist() == [[True, False, True, True]]
    assert sample_logits(logits, temperature=0).tolist() == [1]
    draws = sample_logits(logits.expand(200, -1), top_k=2, generator=torch.Generator().manual_seed(0))
    assert set(draws.tolist()) == {1, 3}


# ---- save / load -------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_save_and_load_give_identical_logits(layout, tmp_path):
    model = tiny_model(layout, seed=4, tokenizer_name_or_path="neurorvq/tokenizer-tiny")
    positions, channel_ids, time_ids = structured_batch(batch=2)
    expected = model(positions, channel_ids, time_ids).logits
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), LBMConfig)
    for loaded in (LBMForCausalLM.from_pretrained(tmp_path), AutoModelForCausalLM.from_pretrained(tmp_path)):
        assert isinstance(loaded, LBMForCausalLM) and loaded.config.layout == layout
        assert loaded.config.tokenizer_name_or_path == "neurorvq/tokenizer-tiny"
        assert torch.equal(loaded.eval()(positions, channel_ids, time_ids).logits, expected)


def test_shipped_configs():
    for name in ("tiny-depthwise", "tiny-flattened", "small-depthwise", "small-flattened", "large-depthwise"):
        config = LBMConfig.from_json_file(str(CONFIGS / f"{name}.json"))
        assert config.layout == name.split("-")[1]
    for name in ("small-depthwise", "small-flattened"):
        config = LBMConfig.from_json_file(str(CONFIGS / f"{name}.json"))
        # the code alphabet of the bundled tokenizer's config
        tokenizer = NeuroRVQConfig.from_json_file(str(REPO_ROOT / "configs" / "tokenizer" / "small.json"))
        assert config.code_layout == CodeLayout.from_tokenizer_config(tokenizer)
        # depth-wise sees 16 s of 19 channels; flattened (18 steps per position) 4 s, to stay CPU-trainable
        assert config.positions_per_context == (16 if config.layout == "depthwise" else 4) * 19
        with torch.device("meta"):  # count parameters without allocating them
            params = LBMForCausalLM(config).num_parameters()
        assert params * 4 <= 15e6, (name, params)


# ---- bad input ---------------------------------------------------------------------------------------


def test_bad_input_raises_value_error():
    model = tiny_model("depthwise")
    positions, channel_ids, time_ids = structured_batch(batch=1)
    too_big = positions.clone()
    too_big[0, 0, 0] = 8  # scale stream has 8 levels
    bad_calls = [
        lambda: model(too_big, channel_ids, time_ids),
        lambda: model(positions[0], channel_ids, time_ids),  # wrong rank
        lambda: model(positions[..., :5], channel_ids, time_ids),  # wrong number of streams
        lambda: model(positions, channel_ids, time_ids + 16),  # time ids past max_patches
        lambda: model(positions.float(), channel_ids, time_ids),
        lambda: model.generate(["fp1", "not-a-channel"], 2),
        lambda: model.generate(CHANNELS, 0),
        lambda: model.generate(CHANNELS, -1),
        lambda: model.generate(["fp1", "fp1"], 1),
        lambda: model.generate(CHANNELS, 1, top_p=0.0),
    ]
    prompt, prompt_scale = positions_to_codes(positions, 3, 2, 2, True)
    bad_prompt = prompt.clone()
    bad_prompt[0, 0, 0, 0, 0] = 16
    bad_calls += [
        lambda: model.generate(CHANNELS, 1, prompt_codes=bad_prompt, prompt_scale_codes=prompt_scale),
        lambda: model.generate(CHANNELS, 1, prompt_codes=prompt[0], prompt_scale_codes=prompt_scale),
        lambda: model.generate(CHANNELS, 1, prompt_codes=prompt),  # scale codes missing
        lambda: model.generate(CHANNELS[:2], 1, prompt_codes=prompt, prompt_scale_codes=prompt_scale),
    ]
    for i, call in enumerate(bad_calls):
        with pytest.raises(ValueError):
            call()
            pytest.fail(f"bad call {i} did not raise")
    long_model = tiny_model("depthwise", max_positions=4)
    with pytest.raises(ValueError, match="max_positions"):
        long_model(positions, channel_ids, time_ids)


def test_neighbour_tokens_are_the_previous_channel_and_the_previous_second():
    # 2 patches x 3 channels, M = 2 streams; token value = 10 * position + stream
    positions = torch.arange(6)[None, :, None] * 10 + torch.arange(2)[None, None, :]
    channel_ids, time_ids = channel_and_time_ids(torch.tensor([[7, 3, 5]]), 2)
    neighbours = LBMForCausalLM.neighbour_tokens(positions, channel_ids, time_ids)
    assert neighbours.shape == (1, 6, 2, 2)
    previous_channel, previous_second = neighbours[0, :, 0, 0].tolist(), neighbours[0, :, 0, 1].tolist()
    assert previous_channel == [-1, 0, 10, -1, 30, 40]  # none for the first channel of each second
    assert previous_second == [-1, -1, -1, 0, 10, 20]  # none in the first second
    assert neighbours[0, 4, 1].tolist() == [31, 11]  # stream 1 reads stream 1


def test_stream_temperatures_replace_the_temperature_per_stream():
    from neurorvq.lbm.sampling import band_temperatures

    model = tiny_model("depthwise")
    names = ["c3", "cz", "c4"]
    greedy = model.generate(names, num_patches=2, temperature=0.0)
    same = model.generate(names, num_patches=2, stream_temperatures=[0.0] * model.num_streams, temperature=1.5)
    assert torch.equal(greedy["codes"], same["codes"])
    with pytest.raises(ValueError, match="one temperature per stream"):
        model.generate(names, num_patches=1, stream_temperatures=[1.0, 1.0])
    with pytest.raises(ValueError, match="temperature"):
        model.generate(names, num_patches=1, stream_temperatures=[float("nan")] * model.num_streams)
    tokenizer = NeuroRVQConfig.from_json_file(str(REPO_ROOT / "configs" / "tokenizer" / "small.json"))
    lbm = LBMConfig.from_tokenizer_config(tokenizer)
    temperatures = band_temperatures(lbm, tokenizer, 0.9, 0.3)
    # gain tokens, then 8 bands x 2 stages: the four bands below 8 Hz are the slow ones
    assert temperatures == [0.9, 0.9] + [0.3] * 8 + [0.9] * 8
    # a model's own per-stream scales multiply both
    scaled = LBMConfig.from_tokenizer_config(tokenizer, stream_temperature_scales=[0.5, 0.5] + [1.0] * 14 + [2.0] * 2)
    assert band_temperatures(scaled, tokenizer, 0.9, 0.3) == pytest.approx([0.45, 0.45] + [0.3] * 8 + [0.9] * 6 + [1.8] * 2)


def test_stream_temperature_scales_are_the_models_default_profile():
    model = tiny_model("depthwise")
    names = ["c3", "cz", "c4"]
    scales = [0.5 + 0.1 * m for m in range(model.num_streams)]
    explicit = model.generate(names, num_patches=2, generator=torch.Generator().manual_seed(0),
                              stream_temperatures=[0.8 * s for s in scales])
    model.config.stream_temperature_scales = scales
    profiled = model.generate(names, num_patches=2, temperature=0.8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(explicit["codes"], profiled["codes"])
    model.config.stream_temperature_scales = None
    plain = model.generate(names, num_patches=2, temperature=0.8, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(plain["codes"], profiled["codes"])
    with pytest.raises(ValueError, match="stream_temperature_scales"):
        LBMConfig(stream_temperature_scales=[1.0, 1.0])
    with pytest.raises(ValueError, match="stream_temperature_scales"):
        LBMConfig(num_scales=1, num_quantizers=1, stream_temperature_scales=[1.0, 0.0, 1.0])
