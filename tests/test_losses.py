"""The masked-diffusion loss against a hand-computed case, and the AR loss."""

from __future__ import annotations

import math

import torch

from interp.processes import MaskedCorruption, corrupt, masked_diffusion_loss
from tests.conftest import tiny_ar, tiny_dlm


def test_masked_loss_hand_computed():
    # 1 example, 4 positions; position 0 is the prompt, 1..3 eligible; 1 and 3 masked; p = 0.5.
    V = 3
    logits = torch.zeros(1, 4, V)
    logits[0, 1] = torch.tensor([math.log(2.0), 0.0, 0.0])  # p(target=0) = 2/4 = 0.5
    logits[0, 3] = torch.tensor([0.0, 0.0, 0.0])  # p(target=2) = 1/3
    logits[0, 2] = torch.tensor([-100.0, 100.0, -100.0])  # unmasked: must not count, even if wrong
    tokens = torch.tensor([[1, 0, 0, 2]])
    c = MaskedCorruption(
        noisy=torch.tensor([[1, 9, 0, 9]]),
        corrupted=torch.tensor([[False, True, False, True]]),
        eligible=torch.tensor([[False, True, True, True]]),
        t=torch.tensor([0.5]),
        p=torch.tensor([0.5]),
    )
    expected = (-math.log(0.5) / 0.5 + -math.log(1 / 3) / 0.5) / 3  # Σ_masked CE/p over 3 eligible
    got = masked_diffusion_loss(logits, tokens, c)
    assert torch.allclose(got, torch.tensor([expected]), atol=1e-6)
    # with a uniform-state share the clean eligible position (2, wrong with CE≈200) is scored, weight 1
    got_u = masked_diffusion_loss(logits, tokens, c, uniform_frac=0.1)
    assert got_u.item() > expected + 50


def test_corrupt_respects_eligibility_and_rate():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(3, 10, (2000, 8))
    eligible = torch.zeros(2000, 8, dtype=torch.bool)
    eligible[:, 4:] = True
    t = torch.full((2000,), 0.3)
    c = corrupt(tokens, eligible, t, mask_id=1, content_ids=torch.arange(3, 10), generator=g, eps=0.1)
    assert not c.corrupted[:, :4].any()
    rate = c.corrupted[:, 4:].float().mean().item()
    assert abs(rate - (0.9 * 0.3 + 0.1)) < 0.02
    assert (c.noisy[c.corrupted] == 1).all()
    assert torch.equal(c.noisy[~c.corrupted], tokens[~c.corrupted])


def test_uniform_frac_replaces_some_corrupted_tokens_with_content():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(3, 10, (500, 8))
    c = corrupt(
        tokens,
        torch.ones(500, 8, dtype=torch.bool),
        torch.full((500,), 1.0),
        mask_id=1,
        content_ids=torch.arange(3, 10),
        generator=g,
        uniform_frac=0.25,
    )
    random_share = (c.noisy[c.corrupted] != 1).float().mean().item()
    assert 0.2 < random_share < 0.3


def test_dlm_loss_only_depends_on_answer_positions_of_the_prompt_pass():
    m = tiny_dlm(selfcond="topk")
    batch = m.collate(m.train_dataset(0)[:16])
    prepared = m.prepare(batch, torch.Generator().manual_seed(1))
    assert not prepared["corrupted"][:, :8].any(), "the prompt is never corrupted"
    loss = m.loss(m.model, prepared)
    assert loss.shape == (16,) and torch.isfinite(loss).all()
    loss.mean().backward()
    assert m.model.selfcond_mlp[0].weight.grad is not None


def test_ar_loss_scores_only_answer_tokens():
    m = tiny_ar()
    batch = m.collate(m.train_dataset(0)[:4])
    prepared = m.prepare(batch, None)
    # targets 1..11; answer starts at position 8 → targets at index 7..10 scored
    assert prepared["scored"][0].tolist() == [False] * 7 + [True] * 4
    logits = m.model(batch["input_ids"][:, :-1])
    manual = torch.nn.functional.cross_entropy(
        logits[:, 7:].reshape(-1, logits.shape[-1]), batch["input_ids"][:, 8:].reshape(-1)
    )
    assert torch.allclose(m.loss(m.model, prepared).mean(), manual, atol=1e-6)
