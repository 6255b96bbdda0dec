"""Spatial LBM: a second of every channel at once. The training loss is the any-order bound it claims, there is no
privileged channel order, the past is causal, hidden cells stay hidden, generation is reproducible, cached, slides,
and reads its defaults from the saved generation config.

Models are tiny (hidden 32) and codes synthetic; the bundled model's figures live in its model card.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, GenerationConfig

from neurorvq.lbm import LBMForSpatialGeneration, LBMSpatialConfig, channel_and_time_ids, codes_to_positions
from neurorvq.lbm.modeling_lbm_spatial import _spread_order
from neurorvq.lbm.training import lbm_class, lbm_config, load_lbm

from .conftest import REPO_ROOT

TINY = REPO_ROOT / "configs" / "lbm" / "tiny-spatial.json"
CHANNELS = ["fp1", "cz", "o2", "t3"]

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed: int = 0, **overrides) -> LBMForSpatialGeneration:
    values = json.loads(TINY.read_text())
    values.pop("model_type")
    values.update(overrides)
    torch.manual_seed(seed)
    return LBMForSpatialGeneration(LBMSpatialConfig(**values)).eval()


def random_batch(model, batch: int = 2, channels: int = 4, seconds: int = 3, seed: int = 0):
    """Random codes as model inputs: positions [B, A*C, M], channel_ids, time_ids [B, A*C]."""
    layout = model.config.code_layout
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, layout.codebook_size, (batch, layout.num_scales, layout.num_quantizers, channels, seconds),
                          generator=generator)
    scale = torch.randint(0, layout.num_scale_tokens, (batch, 2, channels, seconds), generator=generator)
    index = torch.tensor([model.config.channel_vocabulary.index(n) for n in CHANNELS[:channels]]).expand(batch, -1)
    channel_ids, time_ids = channel_and_time_ids(index, seconds)
    return codes_to_positions(codes, scale), channel_ids, time_ids


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="stream_groups"):
        LBMSpatialConfig(num_scales=2, num_quantizers=2, codebook_size=16, num_scale_tokens=8, stream_groups=[[0, 1]])
    with pytest.raises(ValueError, match="spatial_layers"):
        LBMSpatialConfig(spatial_layers=0)
    with pytest.raises(ValueError, match="layout"):
        LBMSpatialConfig(layout="depthwise")
    with pytest.raises(ValueError, match="codeword_context"):
        LBMSpatialConfig(codeword_context=True)  # needs codeword_logits
    assert lbm_class(lbm_config(TINY)) is LBMForSpatialGeneration


def test_loss_with_a_given_mask_is_the_cross_entropy_of_the_hidden_cells():
    model = tiny_model()
    positions, channel_ids, time_ids = random_batch(model)
    hidden = torch.rand(positions.shape, generator=torch.Generator().manual_seed(1)) < 0.4
    out = model(positions, channel_ids, time_ids, labels=True, hidden_mask=hidden)
    ce = torch.nn.functional.cross_entropy(out.logits.flatten(0, 2), positions.flatten(), reduction="none")
    seconds = positions.shape[0] * 3
    assert torch.allclose(out.loss, (ce * hidden.flatten()).sum() / seconds, rtol=1e-5)
    assert torch.equal(out.hidden_mask, hidden)


@pytest.mark.parametrize("groups", [None, [[0, 1], [2, 3, 4, 5]]])
def test_drawn_masks_give_the_any_order_bound_weights(groups):
    """Per second, k ~ U{1..N_g} cells of the drawn group are scored with weight G |g| / (M k): the weights of the
    any-order (ARDM) estimator, so that its mean over draws is the bound per code."""
    model = tiny_model(stream_groups=groups)
    m, channels = model.num_streams, 4
    hidden, scored, weight = model._draw_hidden(64, 3, channels, "cpu", torch.Generator().manual_seed(0))
    k = scored.sum((2, 3))
    num_groups = len(model.config.groups)
    group = torch.tensor(model._group_of_stream)
    drawn = group[scored.any(2).int().argmax(-1)]  # [B, A]: the group of the scored cells
    sizes = torch.tensor([len(g) for g in model.config.groups])[drawn]
    assert torch.allclose(weight * k, num_groups * sizes / m)
    assert bool((k >= 1).all()) and bool((k <= channels * sizes).all())
    assert set(k[sizes == m].tolist() if groups is None else k.flatten().tolist()) > {1, 2}  # k varies
    later = group[None, None, None] > drawn[..., None, None]
    assert torch.equal(hidden, scored | later.expand_as(hidden))  # later groups hidden, never scored


CODEWORDS = dict(codeword_dims=[3, 5], codeword_logits=True, codeword_context=True)
CODEWORDS_KNOWN = dict(CODEWORDS, codeword_context_normalization="known")
VARIANTS = dict(argvalues=[{}, CODEWORDS, CODEWORDS_KNOWN], ids=["plain", "codeword-context", "context-over-known"])


@pytest.mark.parametrize("extra", **VARIANTS)
def test_no_privileged_channel_order(extra):
    """Permuting the channels (codes, ids and hidden cells together) permutes the logits: nothing depends on the order
    in which channels are listed."""
    model = tiny_model(**extra)
    with torch.no_grad():  # switch the codeword context on (it starts at 0)
        if model.codeword_context_in is not None:
            model.codewords.normal_()
            model.codeword_context_in.normal_()
    positions, channel_ids, time_ids = random_batch(model, seconds=3)
    hidden = torch.rand(positions.shape, generator=torch.Generator().manual_seed(2)) < 0.5
    order = torch.tensor([2, 0, 3, 1])
    permute = lambda x: x.reshape(x.shape[0], 3, 4, *x.shape[2:])[:, :, order].flatten(1, 2)  # noqa: E731
    out = model(positions, channel_ids, time_ids, hidden_mask=hidden)
    permuted = model(permute(positions), permute(channel_ids), time_ids, hidden_mask=permute(hidden))
    assert torch.allclose(permute(out.logits), permuted.logits, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("extra", **VARIANTS)
def test_the_past_is_causal_and_hidden_cells_stay_hidden(extra):
    model = tiny_model(**extra)
    with torch.no_grad():
        if model.codeword_context_in is not None:
            model.codewords.normal_()
            model.codeword_context_in.normal_()
    positions, channel_ids, time_ids = random_batch(model, seconds=3)
    hidden = torch.zeros(positions.shape, dtype=torch.bool)
    hidden[:, 8:] = True  # the last second (channels 8..11) is hidden entirely
    hidden[:, 4, 3] = True  # one cell of the middle second
    out = model(positions, channel_ids, time_ids, hidden_mask=hidden)
    changed = positions.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 8  # the hidden last second's codes (scale levels 8, codes 16)
    changed[:, 4, 3] = (changed[:, 4, 3] + 1) % 8  # and the hidden cell
    again = model(changed, channel_ids, time_ids, hidden_mask=hidden)
    # seconds 0 and 1 saw neither the later second nor their own hidden cell (later seconds may: it is their past)
    assert torch.allclose(out.logits[:, :8], again.logits[:, :8], equal_nan=True)
    changed[:, 0, 2] = (changed[:, 0, 2] + 1) % 8  # a known cell of the first second: later seconds must change
    third = model(changed, channel_ids, time_ids, hidden_mask=hidden)
    assert not torch.allclose(out.logits[:, 8:].nan_to_num(), third.logits[:, 8:].nan_to_num())


def test_generation_is_reproducible_cached_and_slides():
    model = tiny_model()
    sample = lambda **kw: model.generate(CHANNELS, num_patches=5, batch_size=2,  # noqa: E731
                                         generator=torch.Generator().manual_seed(3), **kw)
    first = sample()
    assert first["codes"].shape == (2, 2, 2, 4, 5) and first["scale_codes"].shape == (2, 2, 4, 5)
    assert torch.equal(first["codes"], sample()["codes"])
    assert torch.equal(first["codes"], sample(use_cache=False)["codes"])
    assert not torch.equal(first["codes"], model.generate(CHANNELS, num_patches=5, batch_size=2)["codes"])
    long = model.generate(CHANNELS, num_patches=40, generator=torch.Generator().manual_seed(0))  # window: 16 s
    assert long["codes"].shape[-1] == 40
    layout = model.config.code_layout
    assert int(long["codes"].max()) < layout.codebook_size and int(long["scale_codes"].max()) < layout.num_scale_tokens


def test_window_shift_slides_by_a_share_of_the_window(monkeypatch):
    """generation_config.window_shift = s drops max(1, floor(s x W)) seconds when the context window (W seconds) is
    full: the samples equal the one-second slide's until the window first fills, the cache is rebuilt from the
    W - shift kept seconds only when it slides, cached and uncached sampling agree, and bad shares are refused."""
    model = tiny_model()
    window = min(model.config.max_positions // len(CHANNELS), model.config.max_patches)
    rebuilds = []
    context = type(model)._context

    def spy(self, tokens, place, time_ids, condition, past=None, past_seconds=0):
        if past is None:
            rebuilds.append(tokens.shape[1])  # seconds the main transformer read afresh
        return context(self, tokens, place, time_ids, condition, past, past_seconds)

    monkeypatch.setattr(type(model), "_context", spy)
    sample = lambda **kw: model.generate(CHANNELS, num_patches=window + 9,  # noqa: E731
                                         generator=torch.Generator().manual_seed(0), **kw)["codes"]
    one = sample()
    assert rebuilds == [1] + [window - 1] * 9  # the first second, then every slide keeps W - 1 seconds
    model.generation_config.window_shift = 0.25
    rebuilds.clear()
    quarter = sample()
    shift = max(1, window // 4)
    assert shift > 1 and rebuilds == [1] + [window - shift] * len(range(window, window + 9, shift))
    assert torch.equal(quarter[..., :window], one[..., :window]) and not torch.equal(quarter, one)
    assert torch.equal(sample(use_cache=False), quarter)
    for bad in (0, 1.5, True, "half"):
        model.generation_config.window_shift = bad
        with pytest.raises(ValueError, match="window_shift"):
            sample()


def test_prompt_is_kept_and_guidance_needs_a_condition():
    model = tiny_model(condition_names=["rest", "task"])
    first = model.generate(CHANNELS, num_patches=3, generator=torch.Generator().manual_seed(0))
    out = model.generate(CHANNELS, num_patches=2, prompt_codes=first["codes"], prompt_scale_codes=first["scale_codes"],
                         condition="task", guidance_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out["codes"][..., :3], first["codes"]) and out["codes"].shape[-1] == 5
    with pytest.raises(ValueError, match="needs a condition"):
        model.generate(CHANNELS, num_patches=1, guidance_scale=2.0)
    with pytest.raises(ValueError, match="unknown condition"):
        model.generate(CHANNELS, num_patches=1, condition="sleep")


def test_sampling_options_are_checked_and_change_what_they_should():
    model = tiny_model()
    run = lambda **kw: model.generate(CHANNELS, num_patches=2, generator=torch.Generator().manual_seed(5), **kw)  # noqa
    greedy = run(temperature=0)
    assert torch.equal(greedy["codes"], model.generate(CHANNELS, num_patches=2, temperature=0)["codes"])
    assert not torch.equal(run(num_rounds=1)["codes"], run(num_rounds=24)["codes"])
    assert not torch.equal(run()["codes"], run(unmasking="random")["codes"])
    for bad, match in (({"num_rounds": 0}, "num_rounds"), ({"unmasking": "left-to-right"}, "unmasking"),
                       ({"temperature": -1}, "temperature"), ({"top_p": 1.5}, "top_p"),
                       ({"stream_temperatures": [1.0]}, "stream_temperatures")):
        with pytest.raises(ValueError, match=match):
            run(**bad)


def test_choice_temperature_scales_the_choice_noise_of_confidence_unmasking():
    """choice_temperature defaults to the temperature (given equal, nothing changes); another value changes which
    cells confidence unmasking keeps, not random unmasking (which draws no choice noise); it is read from the
    generation config too, and bad values are refused."""
    model = tiny_model()
    run = lambda **kw: model.generate(CHANNELS, num_patches=2, generator=torch.Generator().manual_seed(5),  # noqa
                                      temperature=0.8, **kw)["codes"]
    confident = run(unmasking="confidence")
    assert torch.equal(confident, run(unmasking="confidence", choice_temperature=0.8))
    noisy = run(unmasking="confidence", choice_temperature=4.5)
    assert not torch.equal(confident, noisy)
    assert torch.equal(run(unmasking="random"), run(unmasking="random", choice_temperature=4.5))
    model.generation_config.choice_temperature = 4.5
    assert torch.equal(run(unmasking="confidence"), noisy)
    for bad in (-1.0, float("nan"), True, "4.5"):
        with pytest.raises(ValueError, match="choice_temperature"):
            run(unmasking="confidence", choice_temperature=bad)


def test_last_round_temperature_scale_cools_the_later_rounds_linearly(monkeypatch):
    """Round r of R samples at temperature x (1 + (scale - 1) r / (R - 1)) for every stream; 1 (the default) changes
    nothing; the setting is read from the generation config too, and bad values are refused."""
    model = tiny_model()
    seen = []
    original = LBMForSpatialGeneration._sample_cells

    def recording(self, logits, temperatures, *args, **kwargs):
        seen.append(temperatures.unique().tolist())
        return original(self, logits, temperatures, *args, **kwargs)

    monkeypatch.setattr(LBMForSpatialGeneration, "_sample_cells", recording)
    run = lambda **kw: model.generate(CHANNELS, num_patches=1, generator=torch.Generator().manual_seed(5),  # noqa
                                      temperature=0.8, num_rounds=5, unmasking="random", **kw)["codes"]
    flat = run()
    assert seen == [[pytest.approx(0.8)]] * 5
    assert torch.equal(flat, run(last_round_temperature_scale=1.0))
    seen.clear()
    cooled = run(last_round_temperature_scale=0.5)
    assert seen == [[pytest.approx(0.8 * (1 - 0.5 * r / 4))] for r in range(5)]
    assert not torch.equal(flat, cooled)
    model.generation_config.last_round_temperature_scale = 0.5
    assert torch.equal(run(), cooled)
    for bad in (-0.1, float("inf"), True, "0.5"):
        with pytest.raises(ValueError, match="last_round_temperature_scale"):
            run(last_round_temperature_scale=bad)


def test_spread_order_ranks_each_streams_channels_farthest_point_first():
    """Channels at 0, 1, 2, 3 and 10 on a line: per row and stream the ranks are a permutation, the first channel is
    random (it varies over streams), and each next one is the farthest from those ranked before it."""
    position = torch.tensor([0.0, 1.0, 2.0, 3.0, 10.0])
    distances = (position[:, None] - position[None]).abs()[None].expand(2, -1, -1)  # [B, C, C]
    generator = torch.Generator().manual_seed(0)
    rank = _spread_order(distances, 6, lambda *shape: torch.rand(*shape, generator=generator))  # [B, C, M]
    assert torch.equal(rank.sort(dim=1).values, torch.arange(5)[None, :, None].expand(2, 5, 6))
    order = rank.argsort(dim=1)  # [B, k, M]: the channel of rank k
    assert len(set(order[:, 0].flatten().tolist())) > 1
    for b in range(2):
        for m in range(6):
            chosen = [int(order[b, 0, m])]
            for k in range(1, 5):
                nearest = distances[0][:, chosen].min(1).values
                nearest[chosen] = -1
                assert float(nearest[order[b, k, m]]) == float(nearest.max())
                chosen.append(int(order[b, k, m]))


def test_spread_unmasking_samples_reproducibly_and_needs_electrode_positions():
    model = tiny_model(electrode_positions=True)
    run = lambda: model.generate(CHANNELS, num_patches=3, batch_size=2, unmasking="spread",  # noqa: E731
                                 generator=torch.Generator().manual_seed(1))["codes"]
    first = run()
    assert torch.equal(first, run()) and first.shape[-1] == 3
    assert not torch.equal(first, model.generate(CHANNELS, num_patches=3, batch_size=2, unmasking="random",
                                                 generator=torch.Generator().manual_seed(1))["codes"])
    with pytest.raises(ValueError, match="electrode positions"):
        tiny_model(electrode_positions=False).generate(CHANNELS, num_patches=1, unmasking="spread")


def test_generation_config_is_saved_loaded_and_read(tmp_path):
    model = tiny_model()
    model.generation_config = GenerationConfig(do_sample=True, temperature=0.0, num_rounds=3, unmasking="confidence",
                                               guidance_scale=1.0, stream_temperature_scales=None)
    model.save_pretrained(tmp_path)
    for loaded in (LBMForSpatialGeneration.from_pretrained(tmp_path), AutoModelForCausalLM.from_pretrained(tmp_path),
                   load_lbm(tmp_path)):
        assert type(loaded) is LBMForSpatialGeneration
        assert loaded.generation_config.num_rounds == 3 and loaded.generation_config.temperature == 0.0
    loaded = load_lbm(tmp_path)
    # temperature 0 saved: the default call is greedy, so any generator gives the same codes
    a = loaded.generate(CHANNELS, num_patches=2, generator=torch.Generator().manual_seed(0))
    b = loaded.generate(CHANNELS, num_patches=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a["codes"], b["codes"])
    c = loaded.generate(CHANNELS, num_patches=2, temperature=1.0, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(a["codes"], c["codes"])  # an explicit option overrides the saved one


def test_weights_stored_in_bfloat16_load_as_float32(tmp_path):
    """A model saved in bfloat16 (half the file) loads for float32 compute, with the stored (rounded) values, unless
    the caller asks for another dtype."""
    model = tiny_model()
    model.to(torch.bfloat16).save_pretrained(tmp_path)
    rounded = {name: value.float() for name, value in model.state_dict().items()}
    model.float()
    positions, channel_ids, time_ids = random_batch(model)
    for loaded in (load_lbm(tmp_path), AutoModelForCausalLM.from_pretrained(tmp_path)):
        assert {p.dtype for p in loaded.parameters()} == {torch.float32}
        state = loaded.state_dict()
        assert all(torch.equal(state[name], value) for name, value in rounded.items())
    model.load_state_dict(rounded)
    expected = model(positions, channel_ids, time_ids, labels=True).loss
    assert torch.equal(load_lbm(tmp_path).eval()(positions, channel_ids, time_ids, labels=True).loss, expected)
    as_stored = LBMForSpatialGeneration.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert {p.dtype for p in as_stored.parameters()} == {torch.bfloat16}


def test_a_tiny_model_learns_that_channels_share_their_codes():
    """Every channel of a second carries the same (random) codes: the spatial transformer must pass what the known
    cells say to the hidden ones, so the any-order bound falls far below the uniform code cost."""
    model = tiny_model(dropout=0.0)
    model.train()
    layout = model.config.code_layout
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    uniform = sum(math.log(v) for v in layout.stream_vocab_sizes) / model.num_streams
    losses = []
    for _ in range(300):
        codes = torch.randint(0, layout.codebook_size, (8, layout.num_scales, layout.num_quantizers, 1, 3),
                              generator=generator).expand(-1, -1, -1, 4, -1)
        scale = torch.randint(0, layout.num_scale_tokens, (8, 2, 1, 3), generator=generator).expand(-1, -1, 4, -1)
        index = torch.tensor([model.config.channel_vocabulary.index(n) for n in CHANNELS]).expand(8, -1)
        channel_ids, time_ids = channel_and_time_ids(index, 3)
        loss = model(codes_to_positions(codes, scale), channel_ids, time_ids, labels=True).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    loss = sum(losses[-20:]) / 20
    # the bound's floor: per stream, the first channel decoded costs ~uniform, the other three ~nothing (a quarter of
    # uniform); 300 steps get well on the way (measured 0.67 x uniform; a model blind across channels stays at 1.0)
    assert loss < 0.75 * uniform, (loss, uniform)


@pytest.mark.parametrize("codeword_dims", [None, [3, 5], [3, 12]], ids=["plain", "factored", "factored-and-folded"])
def test_stream_heads_give_the_defined_logits(codeword_dims):
    """The folded stream heads (narrow codeword maps factored) give the logits as defined: per stream m, query =
    out @ stream_proj[m]; query . (tied code embedding) - precision / 2 * ||codeword - mean||^2 (up to a constant per
    cell), with mean and log-precision linear in the query; scoring cells one by one (generation) gives the same."""
    extra = dict(codeword_dims=codeword_dims, codeword_logits=True) if codeword_dims else {}
    model = tiny_model(**extra)
    heads = model._stream_heads()
    if codeword_dims:  # width 32, 16 codes: 12-dim codewords are cheaper folded, 3- and 5-dim ones factored
        assert bool(heads["folded"]) == (codeword_dims[1] == 12) and heads["factored"]
    with torch.no_grad():
        if codeword_dims:  # non-trivial codewords, means and precisions
            model.codewords.normal_()
            model.codeword_mean.weight.normal_(std=0.3)
            model.codeword_precision.normal_(std=0.3)
        model.stream_proj.add_(0.1 * torch.randn_like(model.stream_proj))
        out = torch.randn(2, 4, model.config.hidden_size)
        full = model._logits(out)  # [2, 4, M, V]
        b, c, s = torch.meshgrid(torch.arange(2), torch.arange(4), torch.arange(model.num_streams), indexing="ij")
        cells = model._cell_logits(out[b.flatten(), c.flatten()], s.flatten(), model._stream_heads())
        for m in range(model.num_streams):  # the definition, stream by stream
            size, query = model._stream_sizes[m], out @ model.stream_proj[m]  # [2, 4, D]
            expected = query @ model.token_embed.weight[model._offsets[m]: model._offsets[m] + size].T
            if codeword_dims:
                start, end = model._codeword_slices[m]
                words, mean = model.codewords[:size, start:end], query @ model.codeword_mean.weight[start:end].T
                precision = (query @ model.codeword_precision[m] + model.codeword_log_precision[m]).exp()
                expected = expected - precision[..., None] / 2 * ((words - mean[..., None, :]) ** 2).sum(-1)
            got = full[..., m, :size]
            assert torch.isinf(full[..., m, size:]).all()
            assert torch.allclose(got.log_softmax(-1), expected.log_softmax(-1), atol=1e-4)
    assert torch.allclose(cells.view_as(full), full, atol=1e-4, equal_nan=True)


def test_codeword_context_over_known_channels_is_the_mean_known_codeword():
    """With normalization "known", a stream's context is the pair-weighted mean over the channels where that stream is
    known: one known neighbour hands over its codeword whatever its pair weight, none hands over 0; with "all", the
    same neighbour arrives scaled by its weight."""
    contexts = {}
    for normalization in ("known", "all"):
        model = tiny_model(**dict(CODEWORDS, codeword_context_normalization=normalization))
        with torch.no_grad():
            model.codewords.normal_(generator=torch.Generator().manual_seed(3))
        positions, channel_ids, _ = random_batch(model, seconds=1)
        tokens = positions + model.stream_offsets(positions.device)  # [B, C, M], one second
        hidden = torch.ones(tokens.shape, dtype=torch.bool)
        hidden[:, 1, 2] = False  # channel 1's stream 2 is the only known cell
        weights = model._pair_weights(model._place(channel_ids))
        contexts[normalization] = model._codeword_context(tokens, hidden, weights)  # [B, H, C, F + M]
        start, end = model._codeword_slices[2]
        word = model._codeword_vectors(tokens, hidden)[:, 1, start:end]  # channel 1's stream-2 codeword [B, D_2]
    known, every = contexts["known"], contexts["all"]
    for c in (0, 2, 3):  # the other channels see channel 1's codeword
        assert torch.allclose(known[:, :, c, start:end], word[:, None].expand(-1, known.shape[1], -1), atol=1e-6)
        assert torch.allclose(every[:, :, c, start:end], weights[:, :, c, 1, None] * word[:, None], atol=1e-6)
    assert torch.count_nonzero(known[:, :, 1, :-model.num_streams]) == 0  # channel 1 itself: no other known cell
    others = [m for m in range(model.num_streams) if m != 2]
    assert torch.count_nonzero(known[..., -model.num_streams:][..., others]) == 0  # shares of the hidden streams
    assert torch.allclose(known[..., -model.num_streams:], every[..., -model.num_streams:])  # shares: the same


@pytest.mark.parametrize("unmasking", ["random", "confidence", "spread"])
def test_generation_keeps_the_spatial_inputs_equal_to_the_revealed_cells(unmasking, monkeypatch):
    """Generation updates the spatial transformer's inputs cell by cell as codes are revealed: every round they equal
    the inputs recomputed from the cells known so far (what training sees for the same hidden cells)."""
    model = tiny_model(**CODEWORDS_KNOWN, electrode_positions=True)
    rounds, spatial = [], model._spatial

    def recording(inputs, tokens, hidden, *args):
        rounds.append((inputs.clone(), tokens.clone(), hidden.clone()))
        return spatial(inputs, tokens, hidden, *args)

    monkeypatch.setattr(model, "_spatial", recording)
    place = model._place(model.channel_indices(CHANNELS, 2))
    context_and_place = model.context_in(model._first_context(2, len(CHANNELS), 0.0)) + place
    settings = model._sampling_settings(None, num_rounds=4, unmasking=unmasking)
    with torch.no_grad():
        model._sample_second(context_and_place, settings, model._stream_heads(), torch.Generator().manual_seed(0),
                             False, model._pair_weights(place), model._channel_distances(model.channel_indices(CHANNELS, 2)))
    assert len(rounds) == 4 and not rounds[-1][2].all() and rounds[-1][2].any()  # cells revealed between rounds
    for inputs, tokens, hidden in rounds:
        assert torch.allclose(inputs, context_and_place + model._cell_embeddings(tokens, hidden), atol=1e-5)


def test_cell_sampling_follows_the_tempered_filtered_distribution():
    """Inverse-CDF sampling: frequencies match softmax(logits / T), codes at -inf or cut by top-k are never drawn,
    temperature 0 is the argmax."""
    model = tiny_model()
    logits = torch.tensor([[2.0, 1.0, 0.0, float("-inf"), -1.0], [0.0, 3.0, float("-inf"), 1.0, float("-inf")]])
    rows = logits.repeat(10000, 1)
    codes, log_prob = model._sample_cells(rows, torch.full((len(rows),), 0.8), None, None,
                                          torch.Generator().manual_seed(0))
    for r in range(2):
        drawn = codes[r::2]
        frequency = torch.bincount(drawn, minlength=5).float() / len(drawn)
        assert torch.allclose(frequency, (logits[r] / 0.8).softmax(-1), atol=0.015), frequency
        assert torch.allclose(log_prob[r::2], (logits[r] / 0.8).log_softmax(-1)[drawn], atol=1e-5)
    top_two, _ = model._sample_cells(rows, torch.ones(len(rows)), 2, None, torch.Generator().manual_seed(1))
    assert set(top_two[0::2].tolist()) == {0, 1} and set(top_two[1::2].tolist()) == {1, 3}
    greedy, _ = model._sample_cells(logits, torch.tensor([0.0, 0.0]), None, None, torch.Generator().manual_seed(2))
    assert greedy.tolist() == [0, 1]


def test_spatial_condition_starts_at_zero_and_reaches_the_spatial_inputs_in_training_and_generation(monkeypatch):
    plain = tiny_model(condition_names=["a", "b"])
    model = tiny_model(condition_names=["a", "b"], spatial_condition=True)
    assert torch.count_nonzero(model.spatial_condition_embed.weight) == 0
    missing, unexpected = model.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["spatial_condition_embed.weight"] and not unexpected
    positions, channel_ids, time_ids = random_batch(model)
    condition_ids = torch.tensor([1, 2])
    loss = lambda m: m(positions, channel_ids, time_ids, labels=True, condition_ids=condition_ids).loss  # noqa: E731
    with torch.no_grad():
        assert torch.equal(loss(model), loss(plain))  # fine-tuning from a model without it starts where it was
        model.spatial_condition_embed.weight.normal_()
        assert not torch.allclose(loss(model), loss(plain))
    inputs = []
    sample_second = model._sample_second
    monkeypatch.setattr(model, "_sample_second", lambda context_and_place, *args: (
        inputs.append(context_and_place.clone()), sample_second(context_and_place, *args))[1])
    with torch.no_grad():
        model.generate(CHANNELS, num_patches=1, batch_size=2, condition=["a", "b"],
                       generator=torch.Generator().manual_seed(0))
        place = model._place(model.channel_indices(CHANNELS, 2))
        condition = model._condition(condition_ids, 2, "cpu")
        expected = (model.context_in(model._first_context(2, len(CHANNELS), condition)) + place
                    + model.spatial_condition_embed(condition_ids)[:, None])
    assert torch.allclose(inputs[0], expected, atol=1e-6)
    with pytest.raises(ValueError, match="spatial_condition"):
        LBMSpatialConfig(spatial_condition=1)
