"""The MAE model: patch order, masking, sequence lengths, the loss and its gradients, presets, timm names."""

from __future__ import annotations

import pytest
import timm
import torch

from maelab import MAE
from maelab.models import DINO, EncoderSpec, MAESpec, ViTEncoder, spec_from
from maelab.models.masking import patchify, random_masking, unpatchify

from .conftest import TINY_MODEL


def tiny(**kw: object) -> MAE:
    torch.manual_seed(0)
    return MAE(**{**TINY_MODEL, **kw})


def test_patchify_order_and_round_trip() -> None:
    imgs = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    p = patchify(imgs, 4)
    assert p.shape == (2, 4, 4 * 4 * 3)
    # Patch 1 is the top-right 4x4 block (row-major grid); inside a patch pixels go (row, col, channel).
    expected = imgs[0, :, 0:4, 4:8].permute(1, 2, 0).reshape(-1)
    assert torch.equal(p[0, 1], expected)
    assert torch.equal(p[0, 2, :3], imgs[0, :, 4, 0])  # first pixel of the bottom-left patch, channels last
    assert torch.equal(unpatchify(p, 4, 3), imgs)
    m = MAE(img_size=8, patch_size=2, **TINY_MODEL)
    assert torch.equal(m.unpatchify(m.patchify(imgs)), imgs)


def test_random_masking_counts_and_per_sample() -> None:
    x = torch.randn(16, 64, 8)
    torch.manual_seed(1)
    visible, mask, ids_restore = random_masking(x, 0.75)
    assert visible.shape == (16, 16, 8)
    assert torch.all(mask.sum(1) == 48)
    assert len({tuple(m.tolist()) for m in mask}) == 16  # every sample its own mask
    # The kept tokens are exactly the unmasked ones, and ids_restore undoes the shuffle.
    for b in range(16):
        kept = x[b][mask[b] == 0]
        assert torch.equal(visible[b].sort(0).values, kept.sort(0).values)
    ids_shuffle = torch.argsort(ids_restore, 1)
    assert torch.equal(torch.gather(ids_shuffle, 1, ids_restore), torch.arange(64).expand(16, 64))


@pytest.mark.parametrize("ratio", [1.0, 1.5, -0.1, 0.999])
def test_invalid_mask_ratio(ratio: float) -> None:
    with pytest.raises(ValueError, match="mask_ratio"):
        random_masking(torch.randn(1, 64, 4), ratio)


def test_encoder_sees_only_visible_tokens() -> None:
    m = tiny()
    imgs = torch.randn(3, 3, 32, 32)
    for ratio, visible in [(0.75, 16), (0.5, 32), (0.9, 6), (0.0, 64)]:
        latent, mask, ids_restore = m.forward_encoder(imgs, ratio)
        assert latent.shape == (3, 1 + visible, 32)
        assert mask.shape == ids_restore.shape == (3, 64)
        assert int(mask[0].sum()) == 64 - visible
    # mask_ratio=0 keeps the original order: the features do not depend on random state.
    assert torch.equal(m.forward_encoder(imgs, 0.0)[0], m.forward_features(imgs))


def test_blocks_only_see_visible_tokens() -> None:
    m = tiny()
    lengths = []
    m.blocks[0].register_forward_hook(lambda mod, inp, out: lengths.append(inp[0].shape[1]))
    m(torch.randn(2, 3, 32, 32))
    assert lengths == [1 + 16]


@pytest.mark.parametrize("norm_pix", [False, True])
def test_loss_is_masked_mse_by_hand(norm_pix: bool) -> None:
    m = tiny(norm_pix_loss=norm_pix)
    imgs = torch.randn(4, 3, 32, 32)
    torch.manual_seed(3)
    loss, pred, mask = m(imgs)
    assert pred.shape == (4, 64, 48) and mask.shape == (4, 64)
    target = m.patchify(imgs)
    if norm_pix:
        mu = target.mean(-1, keepdim=True)
        var = target.var(-1, keepdim=True)  # unbiased, eps 1e-6 as in the MAE paper's code
        target = (target - mu) / torch.sqrt(var + 1e-6)
    total, count = 0.0, 0
    for b in range(4):
        for n in range(64):
            if mask[b, n] == 1:
                total += ((pred[b, n] - target[b, n]) ** 2).mean().item()
                count += 1
    assert count == 4 * 48
    assert loss.item() == pytest.approx(total / count, rel=1e-5)


def test_visible_predictions_get_no_gradient() -> None:
    m = tiny()
    imgs = torch.randn(2, 3, 32, 32)
    latent, mask, ids_restore = m.forward_encoder(imgs, 0.75)
    pred = m.forward_decoder(latent, ids_restore)
    pred.retain_grad()
    m.forward_loss(imgs, pred, mask).backward()
    grad_per_patch = pred.grad.abs().sum(-1)
    assert torch.all(grad_per_patch[mask == 0] == 0)
    assert torch.all(grad_per_patch[mask == 1] > 0)
    # The mask token is shared and learnable: it receives gradient.
    assert m.mask_token.grad is not None and m.mask_token.grad.abs().sum() > 0


def test_decoder_puts_mask_token_at_masked_positions() -> None:
    m = tiny()
    imgs = torch.randn(2, 3, 32, 32)
    latent, mask, ids_restore = m.forward_encoder(imgs, 0.75)
    seen = []
    m.decoder_blocks[0].register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    m.forward_decoder(latent, ids_restore)
    tokens = seen[0][:, 1:] - m.decoder_pos_embed[:, 1:]  # (B, N, Dd) without positions
    masked = tokens[mask == 1]
    assert torch.allclose(masked, m.mask_token.reshape(1, -1).expand_as(masked), atol=1e-6)
    visible = tokens[mask == 0]
    assert not torch.allclose(visible, m.mask_token.reshape(1, -1).expand_as(visible))


def test_pos_embed_fixed_by_default_and_learnable_option() -> None:
    assert not tiny().pos_embed.requires_grad
    m = tiny(pos_embed="learned")
    assert m.pos_embed.requires_grad and m.decoder_pos_embed.requires_grad
    assert torch.all(tiny().pos_embed[0, 0] == 0)  # CLS position: zeros


@pytest.mark.parametrize("preset,dim,depth,heads", [("ref", 256, 4, 4), ("vit-tiny", 192, 12, 3)])
@pytest.mark.parametrize("patch", [2, 4])
def test_presets_load_strict_into_timm(preset: str, dim: int, depth: int, heads: int, patch: int) -> None:
    m = MAE.from_preset(preset, patch_size=patch).eval()
    assert (m.config["embed_dim"], m.config["encoder_depth"], m.config["encoder_heads"]) == (dim, depth, heads)
    vit = timm.create_model(
        "vit_base_patch16_224", pretrained=False, img_size=32, patch_size=patch, embed_dim=dim, depth=depth,
        num_heads=heads, num_classes=0,
    ).eval()  # fmt: skip
    vit.load_state_dict(m.encoder_state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (vit.forward_features(x) - m.forward_features(x)).abs().max() < 1e-5


def test_fused_and_explicit_attention_agree() -> None:
    m = tiny()
    x = torch.randn(2, 3, 32, 32)
    noise = torch.rand(2, 64)
    m.set_fused_attention(True)
    a = m(x, noise=noise)[0]
    m.set_fused_attention(False)
    b = m(x, noise=noise)[0]
    assert torch.allclose(a, b, atol=1e-5)


def test_mae_and_dino_share_one_encoder_class() -> None:
    """The MAE *is* a ViTEncoder plus masking and a decoder; DINO's student and teacher are ViTEncoders."""
    m = tiny()
    enc = ViTEncoder(spec_from(EncoderSpec, m.spec))
    enc.load_state_dict(m.encoder_state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(enc(x), m.forward_features(x))
    dino = DINO(spec_from(EncoderSpec, m.spec), out_dim=8, head_hidden_dim=8, bottleneck_dim=8)
    assert type(dino.student.backbone) is type(dino.teacher.backbone) is ViTEncoder and isinstance(m, ViTEncoder)
    assert dino.encoder_state_dict().keys() == m.encoder_state_dict().keys()
    # The keyword arguments are the spec's fields, once: MAE(**fields) == MAE(MAESpec(**fields)).
    assert MAE(MAESpec(**TINY_MODEL)).config == m.config == {**vars(MAESpec()), **TINY_MODEL}


def test_bad_shapes_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="not divisible"):
        MAE(img_size=30, patch_size=4)
    with pytest.raises(ValueError, match="encoder_heads"):
        MAE(embed_dim=30, encoder_heads=4)
    with pytest.raises(ValueError, match="decoder_heads"):
        MAE(decoder_embed_dim=30, decoder_heads=4)
    with pytest.raises(TypeError, match="encoder_dept"):
        MAE(encoder_dept=2)
    with pytest.raises(ValueError, match="preset"):
        MAE.from_preset("vit-gigantic")
