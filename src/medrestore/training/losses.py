"""Training losses, small functions on (N, C, H, W) tensors in [0, 1]."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred, target)


def l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error (GilZuluaga2021's MAE)."""
    return F.l1_loss(pred, target)


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """sqrt((x - y)^2 + eps^2), the robust L1 of LapSRN (Krenz2018)."""
    return torch.sqrt((pred - target) ** 2 + eps * eps).mean()


def channel_weighted_mse(weights: Sequence[float]) -> Loss:
    """MSE with per-channel weights normalised to sum 1; Hayee2017's green-weighted loss is R:G:B = 1:3:2."""
    w = torch.tensor(weights, dtype=torch.float32)
    w = w / w.sum()

    def loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        per_channel = ((pred - target) ** 2).mean(dim=(0, 2, 3))
        return (per_channel * w.to(per_channel)).sum()

    return loss


LOSSES = ("mse", "l1", "charbonnier", "weighted_mse", "multiscale_charbonnier")


def make_loss(name: str, **kwargs) -> Loss:
    """A pixel loss ``f(pred, target)`` by name.

    ``multiscale_charbonnier`` returns a loss with ``pyramid = True``: it takes the list of pyramid
    outputs (``LapSRN.forward_pyramid``) as ``pred``; the training engine checks the attribute.
    """
    if name == "mse":
        return mse
    if name == "l1":
        return l1
    if name == "charbonnier":
        return lambda p, t: charbonnier(p, t, **kwargs)
    if name == "weighted_mse":
        if "weights" not in kwargs:
            raise ValueError("loss weighted_mse needs loss_kwargs.weights, e.g. [1, 3, 2] (Hayee2017's R:G:B)")
        return channel_weighted_mse(kwargs["weights"])
    if name == "multiscale_charbonnier":
        def pyramid_loss(preds, target):
            return multiscale_charbonnier(preds, target, **kwargs)

        pyramid_loss.pyramid = True
        return pyramid_loss
    raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}")


# --------------------------------------------------------------------------- vessel segmentation
# Not a pixel loss of ``make_loss``: it takes logits, a binary target and a weight map, and trains the
# vessel segmenter (medrestore.training.segmenter), not a restoration model.
def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Binary cross-entropy + (1 - soft Dice) over the pixels where ``weight`` is 1 (the FOV)."""
    n = weight.sum().clamp_min(1.0)
    bce = (torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none") * weight).sum() / n
    p = torch.sigmoid(logits) * weight
    t = target * weight
    dice = (2.0 * (p * t).sum() + eps) / (p.sum() + t.sum() + eps)
    return bce + (1.0 - dice)


# --------------------------------------------------------------------------- multi-level, GAN and feature losses
# Loss weights as the seed papers give them.
SRGAN_ADV_WEIGHT = 1e-3  # Hayee2017: content + 1e-3 x adversarial
SEED003_WEIGHTS = {"adversarial": 1.0, "feature": 10.0, "identity": 10.0}  # Zhao2019


def multiscale_charbonnier(preds: Sequence[torch.Tensor], target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """LapSRN's multi-level loss (Krenz2018): the sum over pyramid levels of the Charbonnier loss
    against the target resized (bicubic, antialiased) to each level's size.

    ``preds`` is ``LapSRN.forward_pyramid(x)`` (coarse to fine); ``target`` the finest ground truth.
    """
    total = target.new_zeros(())
    for pred in preds:
        ref = target
        if pred.shape[-2:] != target.shape[-2:]:
            ref = F.interpolate(target, size=pred.shape[-2:], mode="bicubic", align_corners=False, antialias=True)
        total = total + charbonnier(pred, ref, eps)
    return total


def adversarial_bce(pred: torch.Tensor, target_is_real: bool, *, from_logits: bool = True) -> torch.Tensor:
    """The standard GAN loss (SRGAN, Hayee2017): binary cross-entropy of D's output against 1 (real)
    or 0 (fake). For the discriminator call it on real and on fake outputs; for the generator call it
    on D(G(x)) with ``target_is_real=True`` (the non-saturating -log D(G(x)) of Hayee2017's eq. 3).

    ``from_logits=True`` takes pre-sigmoid scores (``SRGANDiscriminator.logits``), which is stable;
    ``False`` takes probabilities (``SRGANDiscriminator.forward``).
    """
    target = torch.full_like(pred, 1.0 if target_is_real else 0.0)
    if from_logits:
        return F.binary_cross_entropy_with_logits(pred, target)
    return F.binary_cross_entropy(pred.clamp(1e-7, 1 - 1e-7), target)


def adversarial_lsgan(pred: torch.Tensor, target_is_real: bool, *, real_label: float = 1.0,
                      fake_label: float = 0.0) -> torch.Tensor:
    """Least-squares GAN loss (Mao et al. 2017; Zhao2019): mean (D(.) - label)^2.

    Discriminator: ``lsgan(D(y), True) + lsgan(D(G(x)), False)``; generator: ``lsgan(D(G(x)), True)``.
    Works on patch score maps of any shape.
    """
    return ((pred - (real_label if target_is_real else fake_label)) ** 2).mean()


def cycle_consistency(reconstructed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Image-level cycle loss ||G_b(G_e(x)) - x||_1 (Zhao2019 eq. 2, one direction; call per direction)."""
    return F.l1_loss(reconstructed, original)


def identity_loss(mapped: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """||G_e(y) - y||_1: a generator fed an image already in its target domain should not change it
    (Zhao2019 eq. 4, one generator; weight 10)."""
    return F.l1_loss(mapped, original)


def feature_consistency(
    feats_pred: Sequence[torch.Tensor],
    feats_target: Sequence[torch.Tensor],
    *,
    weights: Sequence[float] | None = None,
    detach_target: bool = True,
) -> torch.Tensor:
    """Zhao2019's feature-consistency constraint: sum over layers l of mean |F^l(pred) - F^l(target)|.

    ``feats_*`` are lists of feature maps, e.g. ``PatchDiscriminator.forward_features`` of the
    cycle-reconstructed image and of the original (Zhao2019 uses all conv layers of the current
    discriminator, which keeps training: a "dynamic" descriptor). The target side is detached by
    default: it does not depend on the generator and the discriminator is not trained by this loss.
    """
    if len(feats_pred) != len(feats_target):
        raise ValueError(f"feature lists differ in length: {len(feats_pred)} vs {len(feats_target)}")
    if weights is None:
        weights = [1.0] * len(feats_pred)
    if len(weights) != len(feats_pred):
        raise ValueError(f"{len(weights)} weights for {len(feats_pred)} feature layers")
    total = feats_pred[0].new_zeros(())
    for w, fp, ft in zip(weights, feats_pred, feats_target):
        total = total + w * F.l1_loss(fp, ft.detach() if detach_target else ft)
    return total


# ---- perceptual loss with a pluggable feature extractor

FeatureExtractor = Callable[[torch.Tensor], "torch.Tensor | Sequence[torch.Tensor]"]

# Index of each named ReLU in torchvision's ``vgg.features`` (the feature map after that activation).
VGG_LAYERS: dict[str, dict[str, int]] = {
    "vgg19": {"relu1_2": 3, "relu2_2": 8, "relu3_4": 17, "relu4_4": 26, "relu5_4": 35},
    "vgg16": {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22, "relu5_3": 29},
}
VGG_DEFAULT_LAYERS = {"vgg19": ("relu5_4",), "vgg16": ("relu2_2",)}  # Ledig's VGG54 / Johnson's relu2_2


class WeightsUnavailableError(RuntimeError):
    """Pre-trained weights that a loss needs are not on this machine and cannot be downloaded."""


def vgg_weights_path(arch: str) -> Path:
    """Where torchvision would cache ``arch``'s ImageNet weights (``$TORCH_HOME/hub/checkpoints``)."""
    import torchvision.models as tvm

    weights = {"vgg19": tvm.VGG19_Weights.IMAGENET1K_V1, "vgg16": tvm.VGG16_Weights.IMAGENET1K_V1}[arch]
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


class VGGFeatures(nn.Module):
    """Frozen ImageNet VGG feature maps at named ReLUs, from the torch hub cache only (never downloads)."""

    def __init__(self, arch: str = "vgg19", layers: Sequence[str] | None = None) -> None:
        super().__init__()
        import torchvision.models as tvm

        if arch not in VGG_LAYERS:
            raise ValueError(f"unknown VGG {arch!r}; known: {', '.join(VGG_LAYERS)}")
        layers = tuple(layers or VGG_DEFAULT_LAYERS[arch])
        unknown = [name for name in layers if name not in VGG_LAYERS[arch]]
        if unknown:
            raise ValueError(f"unknown {arch} layers {unknown}; known: {', '.join(VGG_LAYERS[arch])}")
        path = vgg_weights_path(arch)
        if not path.is_file():
            raise WeightsUnavailableError(
                f"the {arch} perceptual loss needs torchvision's ImageNet weights at {path}, and they are not "
                f"there; they cannot be downloaded on this machine (no network access), so no VGG features are "
                f"available. Fix: copy {path.name} into {path.parent} from a machine that has it, or use the "
                f"'discriminator' feature extractor (Zhao2019) or a 'vessel' backbone instead."
            )
        net = getattr(tvm, arch)(weights=None)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.indices = [VGG_LAYERS[arch][name] for name in layers]
        self.body = net.features[: max(self.indices) + 1].eval()
        for p in self.body.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> VGGFeatures:
        super().train(mode)
        self.body.eval()  # frozen: stays in eval mode
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.body):
            x = layer(x)
            if i in self.indices:
                out.append(x)
        return out


class VesselFeatures(nn.Module):
    """Frozen features of the vessel-segmentation U-Net (``medrestore.models.unet.UNet``) saved at
    ``path`` by ``medrestore.training.segmenter.train_segmenter``: the output of every contracting
    level and the vessel probability map.

    ``layers`` picks among them by index (0 = first level, ``depth`` = bottleneck, ``"prob"`` = the
    sigmoid of the logits); default all. A 1-channel (green) segmenter gets the green channel.
    """

    def __init__(self, path: str | Path, layers: Sequence[int | str] | None = None) -> None:
        super().__init__()
        from medrestore.vessels import load_segmenter

        self.unet, self.meta = load_segmenter(path)
        self.unet.eval()
        for p in self.unet.parameters():
            p.requires_grad_(False)
        n = len(self.unet.down)
        self.layers = list(layers) if layers is not None else [*range(n), "prob"]
        bad = [l for l in self.layers if l != "prob" and not (isinstance(l, int) and 0 <= l < n)]
        if bad:
            raise ValueError(f"unknown vessel feature layers {bad}; known: 0..{n - 1} and 'prob'")

    def train(self, mode: bool = True) -> VesselFeatures:
        super().train(mode)
        self.unet.eval()  # frozen: batch norm keeps its running statistics
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        from medrestore.models.padding import crop_to, pad_to_multiple

        if self.unet.in_channels == 1 and x.shape[1] == 3:
            x = x[:, 1:2]
        x, size = pad_to_multiple(x, self.unet.multiple)
        levels, skips, h = [], [], x
        for i, block in enumerate(self.unet.down):
            h = block(h)
            levels.append(h)
            if i < self.unet.depth:
                skips.append(h)
                h = F.max_pool2d(h, 2)
        for up, skip in zip(self.unet.up, reversed(skips)):
            h = up(h, skip)
        prob = torch.sigmoid(crop_to(self.unet.head(h), size))
        return [prob if l == "prob" else levels[l] for l in self.layers]


def _as_list(feats: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [feats] if isinstance(feats, torch.Tensor) else list(feats)


class PerceptualLoss(nn.Module):
    """Feature-space distance sum_l w_l * criterion(phi_l(pred), phi_l(target)).

    ``extractor`` picks phi:

    * ``"vgg19"`` / ``"vgg16"``: frozen ImageNet VGG (Hayee2017's VGG19 loss, Krenz2018's VGG16), only
      if its weights are already in the torch hub cache; otherwise :class:`WeightsUnavailableError`.
    * ``"discriminator"``: ``backbone`` is a discriminator (anything with ``forward_features``, e.g.
      ``PatchDiscriminator``, or a callable returning a list of maps); it keeps training elsewhere, as
      Zhao2019's dynamic feature descriptor.
    * ``"vessel"``: the pipeline's own vessel-segmentation U-Net, frozen (:class:`VesselFeatures`,
      loaded from ``path``), or any callable ``backbone`` mapping an (N, C, H, W) image to a tensor or
      list of feature maps. A retina-specific perceptual loss: thin vessels that the restoration
      blurs away change the segmenter's features.
    * a callable: used as phi directly.

    ``criterion`` is ``"mse"`` (Ledig, Johnson) or ``"l1"``; ``scale`` multiplies the result (Ledig
    rescales VGG features by 1/12.75, i.e. the loss by about 0.006). Target features are computed
    without gradient. With a discriminator backbone the generator's loss also leaves gradients on the
    discriminator's weights: zero them (or set ``requires_grad_(False)``) before its own step, as in
    any GAN loop.
    """

    def __init__(
        self,
        extractor: str | FeatureExtractor = "vgg19",
        *,
        layers: Sequence[str] | None = None,
        backbone: nn.Module | FeatureExtractor | None = None,
        criterion: str = "mse",
        weights: Sequence[float] | None = None,
        scale: float = 1.0,
        path: str | Path | None = None,
    ) -> None:
        super().__init__()
        if criterion not in ("mse", "l1"):
            raise ValueError(f"criterion must be 'mse' or 'l1', got {criterion!r}")
        self.criterion = F.mse_loss if criterion == "mse" else F.l1_loss
        self.weights = None if weights is None else list(weights)
        self.scale = scale
        self.kind = extractor if isinstance(extractor, str) else "callable"
        if extractor in ("vgg19", "vgg16"):
            self.extract: FeatureExtractor = VGGFeatures(extractor, layers)
        elif extractor == "discriminator":
            if backbone is None:
                raise ValueError("extractor='discriminator' needs backbone=<the discriminator being trained>")
            self.extract = getattr(backbone, "forward_features", backbone)
        elif extractor == "vessel":
            if backbone is None and path is None:
                raise ValueError(
                    "extractor='vessel' needs path=<a segmenter folder written by "
                    "medrestore.training.segmenter.train_segmenter> (e.g. artifacts/segmenter) or backbone=<a vessel "
                    "network mapping images to feature maps>"
                )
            self.extract = VesselFeatures(path, layers=layers) if backbone is None else backbone
        elif callable(extractor):
            self.extract = extractor
        else:
            raise ValueError(f"unknown feature extractor {extractor!r}; use vgg19, vgg16, discriminator, vessel or a "
                             "callable")

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        fp = _as_list(self.extract(pred))
        with torch.no_grad():
            ft = _as_list(self.extract(target))
        weights = self.weights or [1.0] * len(fp)
        if len(weights) != len(fp):
            raise ValueError(f"{len(weights)} weights for {len(fp)} feature maps")
        total = pred.new_zeros(())
        for w, a, b in zip(weights, fp, ft):
            total = total + w * self.criterion(a, b)
        return self.scale * total


# ---- vessel-probability loss: the segmenter's vessel map of the output against that of the clean image

def thin_structure(mask: torch.Tensor) -> torch.Tensor:
    """The pixels of a binary (N, 1, H, W) ``mask`` that no 3 x 3 square inside the mask covers: the
    parts of structures at most 2 px wide (a morphological opening with a 3 x 3 square removes
    exactly those). A GPU-cheap stand-in for the scoring's rule
    (:func:`medrestore.vessels.scoring.thin_vessel_mask`: vessel width from the skeleton and the
    distance transform, at most 2 px), close to it on thin vessels and exact on straight ones."""
    m = mask.float()
    eroded = -F.max_pool2d(-F.pad(m, (1, 1, 1, 1), value=1.0), 3, stride=1)
    opened = F.max_pool2d(F.pad(eroded, (1, 1, 1, 1), value=0.0), 3, stride=1)
    return (m > 0) & (opened == 0)


class VesselProbabilityLoss(nn.Module):
    """Weighted binary cross-entropy between the frozen vessel segmenter's probability map of the
    restored image and that of the clean image (the soft target), with every pixel of a thin vessel
    of the clean image (:func:`thin_structure` of its map above ``threshold``) weighted
    ``1 + thin_weight``; normalised by the sum of the weights.

    Why this form: a pixel loss rewards blurring thin vessels away (their contrast is small against
    the noise); this term costs every thin vessel the segmenter no longer finds, and with the soft
    target it also costs vessels the output invents. ``path`` is a segmenter folder (as
    :class:`VesselFeatures`); ``threshold`` defaults to the segmenter's own (its ``model.json``).
    """

    def __init__(self, path: str | Path, *, thin_weight: float = 4.0, threshold: float | None = None) -> None:
        super().__init__()
        self.features = VesselFeatures(path, layers=["prob"])
        rule = self.features.meta.get("binarize") or {}
        self.threshold = float(
            threshold
            if threshold is not None
            else rule.get("value", 0.5)
            if rule.get("rule", "threshold") == "threshold"
            else 0.5
        )
        if thin_weight < 0:
            raise ValueError(f"thin_weight must be >= 0, got {thin_weight}")
        self.thin_weight = float(thin_weight)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p = self.features(pred)[0].clamp(1e-6, 1 - 1e-6)
        with torch.no_grad():
            q = self.features(target)[0]
            w = 1.0 + self.thin_weight * thin_structure(q >= self.threshold).float()
        bce = -(q * torch.log(p) + (1 - q) * torch.log(1 - p))
        return (w * bce).sum() / w.sum()
