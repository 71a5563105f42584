"""DINO: self-distillation with no labels (Caron et al. 2021), on maelab's ViT encoder.

A student and a teacher share one architecture (:class:`~maelab.models.vit.ViTEncoder` + a DINO
projection head). The student sees every crop (2 global + L local), the teacher only the 2 global
crops; the loss is the cross-entropy between the teacher's centred, sharpened softmax and the
student's softmax over all pairs of *different* crops. Only the student gets gradients; the
teacher is an exponential moving average (EMA) of the student, with a momentum that rises from
``momentum_teacher`` to 1 on a cosine over training. Schedules are per optimizer step and
precomputed as arrays (:func:`momentum_schedule`, :func:`teacher_temp_schedule`) when the
training loop calls :meth:`DINO.setup`.

Evaluation uses the teacher's backbone, as DINO does: :meth:`DINO.forward_features` and
:meth:`DINO.encoder_state_dict` (timm ``VisionTransformer`` names, like ``MAE.encoder_state_dict``).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from maelab.models.vit import EncoderSpec, ViTEncoder, set_fused_attention, spec_from


# ------------------------------------------------------------------------------------ schedules
def momentum_schedule(base: float, total_steps: int) -> torch.Tensor:
    """Teacher EMA momentum per step (total_steps,): cosine from ``base`` at step 0 to 1 at the last step."""
    k = torch.arange(total_steps, dtype=torch.float64)
    return 1.0 - (1.0 - base) * 0.5 * (1.0 + torch.cos(math.pi * k / max(total_steps - 1, 1)))


def teacher_init_weight(momentums: torch.Tensor) -> float:
    """Weight the teacher still gives its random initialisation after steps with these EMA ``momentums``
    (T,): their product. DINO's 0.996 over ~10^5 ImageNet steps leaves ~0; over the ~100 steps of a
    short CPU run it leaves ~0.8, i.e. a teacher that is mostly the random network it started as."""
    return float(torch.exp(torch.log(momentums).sum()))


def suggest_momentum(total_steps: int, init_weight: float = 0.05) -> float:
    """Base momentum whose cosine schedule to 1 leaves ``init_weight`` of the initial teacher after
    ``total_steps`` steps (mean 1 - m is (1 - base) / 2 on the cosine, so exp(-(1 - base) T / 2) = w)."""
    return max(0.0, 1.0 - 2.0 * math.log(1.0 / init_weight) / max(total_steps, 1))


def teacher_temp_schedule(warmup_temp: float, temp: float, warmup_steps: int, total_steps: int) -> torch.Tensor:
    """Teacher temperature per step (total_steps,): linear from ``warmup_temp`` (step 0) to ``temp``
    (step ``warmup_steps - 1``), then constant, as DINO's ``np.linspace`` warm-up (per step here)."""
    warm = torch.linspace(warmup_temp, temp, warmup_steps, dtype=torch.float64)
    rest = torch.full((max(total_steps - warmup_steps, 0),), temp, dtype=torch.float64)
    return torch.cat([warm, rest])[:total_steps]


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, parameter by parameter (in place)."""
    t = list(teacher.parameters())
    s = [p.detach() for p in student.parameters()]
    torch._foreach_mul_(t, momentum)
    torch._foreach_add_(t, s, alpha=1.0 - momentum)


@torch.no_grad()
def clip_grads_per_parameter(params: list[nn.Parameter], max_norm: float) -> None:
    """Scale each parameter's gradient to norm <= ``max_norm`` on its own (DINO's ``clip_gradients``).

    One vectorised pass, no host sync: coefficient min(1, max_norm / (norm + 1e-6)) per parameter.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norms = torch._foreach_norm(grads)
    coefs = [(max_norm / (n + 1e-6)).clamp(max=1.0) for n in norms]
    torch._foreach_mul_(grads, coefs)


# ------------------------------------------------------------------------------------ modules
class DINOHead(nn.Module):
    """(B, in_dim) -> (B, out_dim): 3-layer MLP with GELU to a bottleneck, L2-normalised, then a
    weight-normalised linear layer without bias whose gain is fixed to 1 when ``norm_last_layer``."""

    def __init__(
        self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256, norm_last_layer: bool = True
    ) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim), nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )  # fmt: skip
        for m in self.mlp:
            if isinstance(m, nn.Linear):  # DINO's head init
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        gain = self.last_layer.parametrizations.weight.original0  # (out_dim, 1), weight = gain * v / |v|
        gain.data.fill_(1.0)
        gain.requires_grad = not norm_last_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1)  # (B, bottleneck) on the unit sphere
        return self.last_layer(x)


class MultiCropNet(nn.Module):
    """Backbone + head over a list of crops: crops of one resolution go through the backbone together.

    [crop_0 (B, C, S0, S0), crop_1, ...] -> head(CLS) (n_crops * B, out_dim), crop-major rows.
    """

    def __init__(self, backbone: ViTEncoder, head: DINOHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, crops: list[torch.Tensor]) -> torch.Tensor:
        cls_tokens, i = [], 0
        while i < len(crops):  # consecutive crops of equal size form one backbone batch
            j = i
            while j < len(crops) and crops[j].shape[-1] == crops[i].shape[-1]:
                j += 1
            cls_tokens.append(self.backbone(torch.cat(crops[i:j]))[:, 0])  # (n * B, D)
            i = j
        return self.head(torch.cat(cls_tokens))


@dataclass(frozen=True)
class DINOSpec(EncoderSpec):
    """DINO: the encoder's :class:`EncoderSpec` plus head, temperatures and momentums (names as ``DinoConfig``'s)."""

    out_dim: int = 4096  # prototypes
    head_hidden_dim: int = 2048
    bottleneck_dim: int = 256
    norm_last_layer: bool = True  # fix the weight-norm gain of the head's last layer to 1
    student_temp: float = 0.1
    teacher_temp: float = 0.07
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: float = 10.0
    momentum_teacher: float = 0.996
    center_momentum: float = 0.9
    dino_grad_clip: float = 3.0  # per-parameter gradient norm clip (0 = off)
    freeze_last_layer: float = 1.0  # epochs during which the head's last layer gets no gradient


class DINO(nn.Module):
    """Student and EMA teacher (same ViT + DINO head), centring and sharpening, multi-crop loss.

    ``DINO(embed_dim=..., out_dim=..., ...)`` takes the fields of :class:`DINOSpec`; ``DINO(spec, **fields)``
    starts from a spec (an :class:`EncoderSpec` gives the encoder).
    ``forward(crops)`` returns the loss of one batch of crops ([2 global, L local] tensors, see
    :func:`maelab.augment_dino.dino_multicrop`) and updates the center. The training loop calls
    :meth:`setup` once, :meth:`before_optimizer_step` after backward and :meth:`after_step` after
    each optimizer step (the EMA). Monitoring values (teacher entropy, KL, center norm) are kept
    on the device and read only by :meth:`log_metrics`, at log steps.
    """

    def __init__(self, spec: EncoderSpec | None = None, **fields: Any) -> None:
        super().__init__()
        spec = spec_from(DINOSpec, spec, **fields)
        self.spec = spec
        encoder = spec_from(EncoderSpec, spec)

        def head() -> DINOHead:
            s = spec
            return DINOHead(s.embed_dim, s.out_dim, s.head_hidden_dim, s.bottleneck_dim, s.norm_last_layer)

        self.student = MultiCropNet(ViTEncoder(encoder), head())
        # The teacher starts as a copy of the student and never gets gradients (no drop path, as in DINO).
        self.teacher = MultiCropNet(ViTEncoder(dataclasses.replace(encoder, drop_path=0.0)), head())
        self.teacher.load_state_dict(self.student.state_dict())
        self.teacher.requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, spec.out_dim))
        self._stats = torch.zeros(3)  # running sums of (teacher entropy, KL, center norm) since the last log
        self._stats_n = 0
        self.setup(1, 1)

    # ------------------------------------------------------------------ training-loop hooks
    def setup(self, steps_per_epoch: int, total_steps: int, start_step: int = 0) -> None:
        """Precompute the per-step schedules for a run of ``total_steps`` steps; continue at ``start_step``."""
        self.steps_per_epoch, self.total_steps, self.step = steps_per_epoch, total_steps, start_step
        warmup = round(self.spec.warmup_teacher_temp_epochs * steps_per_epoch)
        momentums = momentum_schedule(self.spec.momentum_teacher, total_steps)
        self.momentums = momentums.tolist()
        self.teacher_temps = teacher_temp_schedule(
            self.spec.warmup_teacher_temp, self.spec.teacher_temp, min(warmup, total_steps), total_steps
        ).tolist()
        self.freeze_steps = round(self.spec.freeze_last_layer * steps_per_epoch)
        left = teacher_init_weight(momentums)
        if total_steps > 1 and start_step == 0 and left > 0.1:
            # Found on a 120-step CPU run: with 0.996 the teacher stayed ~80% random init, its outputs
            # near uniform and its k-NN at the random-init level, which looks like collapse but is not.
            warnings.warn(
                f"--momentum-teacher {self.spec.momentum_teacher:g} over {total_steps} steps leaves {left:.0%} of the "
                f"random initialisation in the teacher at the end (DINO's 0.996 assumes ~10^5 steps); for a run "
                f"this short try --momentum-teacher {suggest_momentum(total_steps):.3f}",
                stacklevel=2,
            )

    def before_optimizer_step(self, step: int) -> None:
        """After backward: clip each student gradient (DINO's clip 3.0) and drop the last layer's
        gradients while ``step`` is in the first ``freeze_last_layer`` epochs (so AdamW skips it)."""
        clip = self.spec.dino_grad_clip
        if clip > 0:
            clip_grads_per_parameter([p for p in self.student.parameters() if p.requires_grad], clip)
        if step < self.freeze_steps:
            for p in self.student.head.last_layer.parameters():
                p.grad = None

    def after_step(self, step: int) -> None:
        """After optimizer step ``step``: EMA of the student into the teacher with that step's momentum."""
        ema_update(self.teacher, self.student, self.momentums[min(step, len(self.momentums) - 1)])
        self.step = step + 1

    def current_teacher_temp(self) -> float:
        """The teacher temperature of the current step (the last value beyond the schedule)."""
        return self.teacher_temps[min(self.step, len(self.teacher_temps) - 1)]

    def log_metrics(self) -> dict[str, float]:
        """Means since the last call of teacher entropy (nats), KL(teacher || student) and center
        norm, plus the current teacher temperature and momentum; one host sync. Resets the sums."""
        out: dict[str, float] = {}
        if self._stats_n:
            entropy, kl, center_norm = (self._stats / self._stats_n).tolist()
            out = {"teacher_entropy": round(entropy, 5), "kl": round(kl, 5), "center_norm": round(center_norm, 5)}
        out["teacher_temp"] = round(self.current_teacher_temp(), 5)
        out["momentum"] = round(self.momentums[min(self.step, len(self.momentums) - 1)], 6)
        self._stats.zero_()
        self._stats_n = 0
        return out

    # ------------------------------------------------------------------ loss
    def dino_loss(self, student_out: torch.Tensor, teacher_out: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """Mean over pairs (teacher global crop t, student crop s != t) of CE(teacher_t, student_s).

        student_out (n_crops * B, K), teacher_out (2 * B, K), crop-major rows. Also updates the
        center with the teacher outputs and accumulates the monitoring statistics.
        """
        n_teacher = 2
        n_crops = student_out.shape[0] * n_teacher // teacher_out.shape[0]
        b = teacher_out.shape[0] // n_teacher
        log_p_student = F.log_softmax(student_out.float() / self.spec.student_temp, dim=-1).view(n_crops, b, -1)
        teacher_logits = (teacher_out.float() - self.center) / teacher_temp
        p_teacher = F.softmax(teacher_logits, dim=-1).view(n_teacher, b, -1).detach()
        ce = -torch.einsum("tbk,sbk->ts", p_teacher, log_p_student) / b  # (2, n_crops): mean CE of each pair
        same = torch.eye(n_teacher, n_crops, dtype=torch.bool, device=ce.device)
        loss = ce[~same].mean()
        with torch.no_grad():
            log_p_teacher = F.log_softmax(teacher_logits, dim=-1)
            entropy = -(log_p_teacher.exp() * log_p_teacher).sum(dim=-1).mean()
            self.update_center(teacher_out.float())
            # Every teacher crop is in n_crops - 1 pairs, so mean CE - mean teacher entropy = mean KL.
            stats = torch.stack([entropy, loss.detach() - entropy, self.center.norm()])
            self._stats = self._stats.to(stats.device) + stats
            self._stats_n += 1
        return loss

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        """center <- m * center + (1 - m) * mean of the teacher outputs (over all processes)."""
        batch_center = teacher_out.mean(dim=0, keepdim=True)  # (1, K)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_center)
            batch_center /= dist.get_world_size()
        self.center.mul_(self.spec.center_momentum).add_(batch_center, alpha=1.0 - self.spec.center_momentum)

    def forward(self, crops: list[torch.Tensor]) -> torch.Tensor:
        """crops [2 global (B, C, G, G), L local (B, C, l, l)] -> scalar DINO loss."""
        with torch.no_grad():
            teacher_out = self.teacher(crops[:2])  # (2B, K): the teacher sees only the global crops
        student_out = self.student(crops)  # ((2 + L) B, K)
        return self.dino_loss(student_out, teacher_out, self.current_teacher_temp())

    # ------------------------------------------------------------------ evaluation / export
    def forward_features(self, imgs: torch.Tensor) -> torch.Tensor:
        """All tokens of the TEACHER backbone (DINO evaluates the teacher): (B, 1 + N, D), CLS first."""
        return self.teacher.backbone(imgs)

    @torch.no_grad()
    def teacher_probs(self, imgs: torch.Tensor, temp: float | None = None) -> torch.Tensor:
        """Teacher softmax over the prototypes of uncropped images: (B, C, H, W) -> (B, out_dim).

        Centred and sharpened with ``temp`` (default: the final teacher temperature)."""
        logits = self.teacher([imgs]).float() - self.center
        return F.softmax(logits / (temp or self.spec.teacher_temp), dim=-1)

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The teacher encoder's weights under timm ``VisionTransformer`` names (as ``MAE.encoder_state_dict``)."""
        return self.teacher.backbone.encoder_state_dict()

    def set_fused_attention(self, enabled: bool) -> None:
        """Use SDPA (``True``, GPUs) or explicit matmul-softmax attention (``False``, CPUs)."""
        set_fused_attention(self, enabled)

    @property
    def config(self) -> dict[str, Any]:
        """The teacher backbone's sizes (for reports)."""
        b = self.teacher.backbone
        return {"embed_dim": b.embed_dim, "patch_size": b.patch_size, "out_dim": self.spec.out_dim}


@torch.no_grad()
def collapse_stats(probs: torch.Tensor) -> dict[str, float]:
    """Collapse indicators of teacher probabilities (B, K), in nats.

    ``entropy``: mean per-image entropy (-> 0 when every image is one-hot, i.e. over-sharpened);
    ``marginal_entropy``: entropy of the batch-mean distribution (-> 0 when all images pick the
    same prototype); both -> log K under the uniform collapse. ``max_entropy`` is log K.
    """
    p = probs.float().clamp_min(1e-12)
    entropy = -(p * p.log()).sum(dim=-1).mean()
    mean = p.mean(dim=0)
    marginal = -(mean * mean.log()).sum()
    return {
        "entropy": entropy.item(), "marginal_entropy": marginal.item(), "max_entropy": math.log(probs.shape[-1]),
    }  # fmt: skip
