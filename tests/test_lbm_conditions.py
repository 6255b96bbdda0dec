"""LBM conditions (brain states, classifier-free guidance) and codeword scores; state classification utilities.

Tiny models on synthetic codes (as in test_lbm.py); the bundled model's figures come from `neurorvq evaluate-lbm`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurorvq.lbm import LBMConfig, LBMForCausalLM, channel_and_time_ids, codes_to_positions
from neurorvq.lbm.condition_evaluation import (condition_bands, condition_likelihood, condition_likelihoods,
                                               state_classification)
from neurorvq.lbm.data import collate_codes
from neurorvq.tokenizer import NeuroRVQConfig, NeuroRVQTokenizer

from .conftest import REPO_ROOT
from .test_lbm import CHANNELS, SMALL_CODES, structured_batch, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

CONDITIONS = ["closed", "open"]


def conditional_model(seed: int = 0, **overrides) -> LBMForCausalLM:
    torch.manual_seed(seed)
    return LBMForCausalLM(tiny_config("depthwise", condition_names=CONDITIONS, **overrides)).eval()


def two_state_batch(batch: int = 8, channels: int = 3, patches: int = 3):
    """Condition 1 windows hold code 1 in every stream, condition 2 windows code 5: the state decides the codes."""
    ids = torch.arange(batch) % 2 + 1
    value = torch.where(ids == 1, 1, 5)
    s, k = SMALL_CODES["num_scales"], SMALL_CODES["num_quantizers"]
    codes = value[:, None, None, None, None].expand(batch, s, k, channels, patches).clone()
    scale_codes = value[:, None, None, None].expand(batch, 2, channels, patches).clone()
    index = torch.tensor([[55, 36, 64]])[:, :channels].expand(batch, -1)
    channel_ids, time_ids = channel_and_time_ids(index, patches)
    return codes_to_positions(codes, scale_codes), channel_ids, time_ids, ids


def two_state_model() -> LBMForCausalLM:
    """A tiny conditional model trained on `two_state_batch`, where the state decides the codes."""
    model = conditional_model().train()
    positions, channel_ids, time_ids, ids = two_state_batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(60):
        # condition dropout as in training: every fourth step unconditional
        dropped = ids if _ % 4 else torch.zeros_like(ids)
        loss = model(positions, channel_ids, time_ids, labels=True, condition_ids=dropped).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_conditions_are_learned_and_steer_sampling():
    model = two_state_model()
    for name, code in (("closed", 1), ("open", 5)):
        for guidance in (1.0, 3.0):
            out = model.generate(CHANNELS, num_patches=2, batch_size=3, condition=name, guidance_scale=guidance,
                                 generator=torch.Generator().manual_seed(0))
            assert out["codes"].shape[0] == 3  # num_samples with a condition: that many samples
            assert (out["codes"] == code).float().mean() > 0.9, (name, guidance)
            assert (out["scale_codes"] == code).float().mean() > 0.9
    # unconditional samples mix both states
    out = model.generate(CHANNELS, num_patches=1, batch_size=16, generator=torch.Generator().manual_seed(1))
    first = out["codes"][:, 0, 0, 0, 0]
    assert (first == 1).any() and (first == 5).any()


def two_state_code_rows(subjects: int = 3) -> "datasets.Dataset":
    """Code rows (`neurorvq tokenize`'s columns) of `two_state_batch`'s states: every subject has two windows of each
    state, plus one subject with "closed" windows only (not within-subject: left out)."""
    import datasets

    s, k = SMALL_CODES["num_scales"], SMALL_CODES["num_quantizers"]
    rows = []
    for subject in range(subjects + 1):
        for state in (["closed"] * 2 if subject == subjects else ["closed", "open"] * 2):
            value = 1 if state == "closed" else 5
            rows.append({"codes": np.full((s, k, 3, 3), value), "scale_codes": np.full((2, 3, 3), value),
                         "channel_indices": [55, 36, 64], "valid_patches": 3, "label": state,
                         "subject_id": f"set/{subject}"})
    return datasets.Dataset.from_list(rows)


def test_condition_likelihood_finds_a_learned_condition_and_chance_without_one():
    model, rows = two_state_model(), two_state_code_rows()
    report = condition_likelihood(model, rows, CONDITIONS)
    assert report["n_windows"] == {"closed": 6, "open": 6} and report["n_subjects"] == 3
    assert report["auc"] == 1.0 and report["balanced_accuracy"] == 1.0 and report["chance"] == 0.5
    assert report["true_minus_other_bits_per_position"] > 0.1  # blind: 0 (below)
    # the same model with its condition embeddings made equal: every window equally likely under both conditions
    with torch.no_grad():
        model.condition_embed.weight[2] = model.condition_embed.weight[1]
    blind = condition_likelihood(model, rows, CONDITIONS)
    assert blind["auc"] == 0.5 and blind["true_minus_other_bits_per_position"] == 0.0
    # every label set at once: those the model does not know, or the split has no within-subject windows of, are left out
    assert condition_likelihoods(model, rows, [CONDITIONS, ["closed", "rest"]]) == [blind]
    assert condition_likelihoods(model, rows.filter(lambda r: r["label"] == "closed"), [CONDITIONS]) == []
    with pytest.raises(ValueError, match="two distinct classes"):
        condition_likelihood(model, rows, ["closed", "rest"])
    with pytest.raises(ValueError, match="no subject"):
        condition_likelihood(model, rows.filter(lambda r: r["label"] == "closed"), CONDITIONS)


def test_condition_errors_and_guidance_one_is_plain_conditional():
    model = conditional_model()
    with pytest.raises(ValueError, match="unknown condition 'asleep'.*closed, open"):
        model.generate(CHANNELS, num_patches=1, condition="asleep")
    with pytest.raises(ValueError, match="guidance_scale"):
        model.generate(CHANNELS, num_patches=1, guidance_scale=2.0)
    with pytest.raises(ValueError, match="guidance_scale"):
        model.generate(CHANNELS, num_patches=1, condition="open", guidance_scale=-1.0)
    with pytest.raises(ValueError, match="one per sample"):
        model.generate(CHANNELS, num_patches=1, batch_size=2, condition=["open"])
    with pytest.raises(ValueError, match="condition_ids"):
        positions, channel_ids, time_ids = structured_batch(batch=2)
        model(positions, channel_ids, time_ids, condition_ids=torch.tensor([0, 3]))
    plain = LBMForCausalLM(tiny_config("depthwise"))
    with pytest.raises(ValueError, match="trained without conditions"):
        plain.generate(CHANNELS, num_patches=1, condition="open")
    a = model.generate(CHANNELS, num_patches=2, batch_size=2, condition="open", generator=torch.Generator().manual_seed(3))
    b = model.generate(CHANNELS, num_patches=2, batch_size=2, condition=["open", "open"], guidance_scale=1.0,
                       generator=torch.Generator().manual_seed(3))
    assert torch.equal(a["codes"], b["codes"])


def test_conditioned_cache_matches_full_forward():
    model = conditional_model()
    positions, channel_ids, time_ids = structured_batch(batch=2)
    ids = torch.tensor([1, 2])
    full = model(positions, channel_ids, time_ids, condition_ids=ids).logits
    first = model(positions[:, :4], channel_ids[:, :4], time_ids[:, :4], condition_ids=ids, use_cache=True)
    rest = model(positions[:, 4:], channel_ids[:, 4:], time_ids[:, 4:], condition_ids=ids, cache=first.cache).logits
    finite = torch.isfinite(full[:, 4:])
    assert torch.allclose(rest[finite], full[:, 4:][finite], atol=1e-5)
    assert not torch.allclose(model(positions, channel_ids, time_ids, condition_ids=ids.flip(0)).logits[finite.new_ones(
        full.shape)], full[finite.new_ones(full.shape)])  # the condition changes the prediction


def test_collate_maps_labels_and_drops_conditions():
    rows = []
    for label in ["open", "closed", "", "sleep"] * 25:
        rows.append({"codes": np.zeros((2, 2, 3, 4), np.int16), "scale_codes": np.zeros((2, 3, 4), np.int16),
                     "channel_indices": [1, 2, 3], "valid_patches": 4, "label": label})
    batch = collate_codes(rows, condition_names=CONDITIONS)
    assert batch["condition_ids"][:4].tolist() == [2, 1, 0, 0]  # unknown and empty labels are unconditional
    dropped = collate_codes(rows, condition_names=CONDITIONS, condition_dropout=0.5,
                            generator=torch.Generator().manual_seed(0))["condition_ids"]
    labelled = batch["condition_ids"] > 0
    share = float((dropped[labelled] == 0).float().mean())
    assert 0.3 < share < 0.7 and (dropped[~labelled] == 0).all()
    assert (collate_codes(rows)["condition_ids"] == 0).all()  # no condition names: all unconditional


def test_codeword_scores_are_gaussian_in_codeword_space():
    tokenizer = NeuroRVQTokenizer(NeuroRVQConfig.from_json_file(str(REPO_ROOT / "configs/tokenizer/tiny-mdct.json")))
    config = LBMConfig.from_tokenizer_config(tokenizer.config, hidden_size=32, num_layers=1, num_heads=2,
                                             depth_hidden_size=16, depth_layers=1, depth_heads=2, max_positions=64)
    assert config.codeword_logits and config.codeword_dims == tokenizer.config.band_widths
    torch.manual_seed(0)
    model = LBMForCausalLM(config).eval()
    model.init_code_embeddings(tokenizer)
    stream = 2  # first residual stream: scale 0, stage 0
    codebook = tokenizer.quantizers[0].stages[0].codebook.detach()
    start, end = model._codeword_slices[stream]
    assert torch.equal(model.codewords[: codebook.shape[0], start:end], codebook)
    with torch.no_grad():
        model.codeword_mean.weight.normal_()
    hidden = torch.randn(4, config.depth_hidden_size)
    scores = model._codeword_scores(hidden, stream)
    mean = hidden @ model.codeword_mean.weight[start:end].T
    precision = (hidden @ model.codeword_precision[stream] + model.codeword_log_precision[stream]).exp()
    expected = -0.5 * precision[:, None] * torch.cdist(mean, codebook) ** 2
    # equal up to a constant per row
    assert torch.allclose(scores - scores[:, :1], expected - expected[:, :1], atol=1e-3, rtol=1e-4)
    # generation's one-stream logits = teacher forcing's: greedy samples are the argmax of their own scores
    out = model.generate(CHANNELS, num_patches=2, temperature=0)
    positions = codes_to_positions(out["codes"], out["scale_codes"])
    channel_ids, time_ids = channel_and_time_ids(model.channel_indices(CHANNELS, 1), 2)
    assert torch.equal(model(positions, channel_ids, time_ids).logits.argmax(-1), positions)
    bad = LBMConfig.from_tokenizer_config(tokenizer.config, codeword_dims=[3] * config.num_scales)
    with pytest.raises(ValueError, match="codeword"):
        LBMForCausalLM(bad).init_code_embeddings(tokenizer)


def test_state_classification_separates_states_and_reports_chance_cases():
    rng = np.random.default_rng(0)
    t = np.arange(8 * 200) / 200

    def item(alpha: float):
        return np.stack([alpha * np.sin(2 * np.pi * 10 * t + rng.uniform(0, 6)) + rng.normal(0, 1, t.size)
                         for _ in range(3)])

    train = {"open": [item(0.5) for _ in range(6)], "closed": [item(4.0) for _ in range(6)]}
    test = {"open": [item(0.5) for _ in range(4)], "closed": [item(4.0) for _ in range(4)]}
    assert state_classification(train, test, ["open", "closed"]) > 0.9
    flipped = {"open": train["closed"], "closed": train["open"]}  # labels swapped: far below chance
    assert state_classification(flipped, test, ["open", "closed"]) < 0.1
    assert np.isnan(state_classification({"open": train["open"]}, test, ["open", "closed"]))
    bands = condition_bands([4 * x for x in test["open"]], test["open"])
    assert all(abs(v - 20 * np.log10(4)) < 0.5 for v in bands.values())  # 4x amplitude = +12 dB in every band


def test_spatial_context_reads_earlier_channels_of_the_same_second_only():
    tokenizer = NeuroRVQTokenizer(NeuroRVQConfig.from_json_file(str(REPO_ROOT / "configs/tokenizer/tiny-mdct.json")))
    config = LBMConfig.from_tokenizer_config(tokenizer.config, hidden_size=32, num_layers=1, num_heads=2,
                                             depth_hidden_size=16, depth_layers=1, depth_heads=2, max_positions=64)
    assert config.spatial_context
    torch.manual_seed(0)
    model = LBMForCausalLM(config).eval()
    model.init_code_embeddings(tokenizer)
    with torch.no_grad():
        model.spatial_in.normal_()
    out = model.generate(CHANNELS, num_patches=3, generator=torch.Generator().manual_seed(0))
    positions = codes_to_positions(out["codes"], out["scale_codes"])
    tokens = positions + model.stream_offsets()
    channel_ids, time_ids = channel_and_time_ids(model.channel_indices(CHANNELS, 1), 3)
    spatial = model._spatial_inputs(tokens, channel_ids, time_ids)  # [1, 9, M, d]
    assert (spatial[:, ::3] == 0).all() and (spatial[:, 1::3] != 0).any()  # the first channel of a second: nothing
    changed = tokens.clone()
    changed[:, 5] = tokens[:, 2]  # the last channel of second 1: read by no position of second 1, nor of second 2
    moved = model._spatial_inputs(changed, channel_ids, time_ids)
    assert torch.equal(moved[:, :6], spatial[:, :6]) and torch.equal(moved[:, 6:], spatial[:, 6:])
    changed = tokens.clone()
    changed[:, 3] = tokens[:, 0] if not torch.equal(tokens[:, 0], tokens[:, 3]) else tokens[:, 1]
    moved = model._spatial_inputs(changed, channel_ids, time_ids)  # the first channel of second 1: read by 4 and 5
    assert torch.equal(moved[:, :4], spatial[:, :4]) and not torch.equal(moved[:, 4:6], spatial[:, 4:6])
    assert torch.equal(moved[:, 6:], spatial[:, 6:])
    # generation (one position at a time) and teacher forcing (all at once) agree: greedy = argmax of its own logits
    out = model.generate(CHANNELS, num_patches=2, temperature=0)
    positions = codes_to_positions(out["codes"], out["scale_codes"])
    channel_ids, time_ids = channel_and_time_ids(model.channel_indices(CHANNELS, 1), 2)
    assert torch.equal(model(positions, channel_ids, time_ids).logits.argmax(-1), positions)
