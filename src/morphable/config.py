"""Run configurations: torch-free dataclasses, one model config per method, and the only registry.

``METHODS`` maps every method to its family (``explicit``, ``implicit``, ``image``), its config class and
the class that implements it (a ``module:attribute`` path, imported only when the method runs, so this
module stays torch-free); ``PRESETS`` maps every preset the CLI offers (``morphable train PRESET``) to a
factory of its :class:`ExperimentConfig`. Nothing else in the package dispatches on a method string: the
run driver (:mod:`morphable.experiment`) finds the family's hooks from ``METHODS``.

A config round-trips through JSON (``to_dict`` / ``config_from_dict``) and is stored in every run folder as
``config.json``. Invalid values (an unknown optimiser, convolution or pooling) are a
:class:`~morphable.errors.MorphableError` when the config is built, so the CLI prints one line.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from morphable.errors import MorphableError

FAMILIES = ("explicit", "implicit", "image")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
PROTOCOLS = ("interpolation", "extrapolation", "identity")
SAMPLERS = ("fast", "error_bounded")


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """Raise a one-line :class:`MorphableError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise MorphableError(f"{name} must be one of {', '.join(map(str, choices))}; got '{value}'")


def check_range(name: str, value: float, low: float, high: float | None, lower_open: bool = False,
                upper_open: bool = False) -> None:
    """Raise a one-line :class:`MorphableError` unless ``value`` lies in the interval from ``low`` to ``high``
    (``None``: unbounded); ``lower_open`` / ``upper_open`` exclude the ends."""
    ok = (value > low if lower_open else value >= low) and (
        high is None or (value < high if upper_open else value <= high))
    if not ok:
        interval = f"{'(' if lower_open else '['}{low}, {'inf)' if high is None else f'{high}' + (')' if upper_open else ']')}"
        raise MorphableError(f"{name} must be in {interval}; got {value}")


def check_positive(name: str, value: float, minimum: float = 1) -> None:
    """Raise a one-line :class:`MorphableError` unless ``value >= minimum``."""
    if not value >= minimum:
        raise MorphableError(f"{name} must be at least {minimum}; got {value}")


@dataclass
class DataConfig:
    """Where the registered meshes are and how they are split (see ``data.registered.make_split``)."""

    path: str = ""
    unit: str | None = None
    template: str | None = None
    protocol: str = "interpolation"
    fold: str | None = None
    val_fraction: float = 0.05

    def __post_init__(self) -> None:
        check_choice("data.protocol (--split)", self.protocol, PROTOCOLS)
        if self.unit is not None:
            from morphable.io import UNIT_HELP, parse_unit

            if parse_unit(self.unit) is None:
                raise MorphableError(f"data.unit (--unit) must be {UNIT_HELP}; got {self.unit!r}")
            self.unit = parse_unit(self.unit)
        if not 0.0 <= self.val_fraction < 1.0:
            raise MorphableError(f"data.val_fraction must be in [0, 1); got {self.val_fraction}")


@dataclass
class TrainConfig:
    """Optimisation settings shared by all trainable methods (``morphable.train.optim``): ``optimizer`` adam,
    adamw or sgd (with ``momentum``); the learning rate is multiplied by ``lr_decay`` every epoch (mesh
    autoencoders) or every ``ImplicitConfig.decay_interval`` epochs (implicit models); ``tensorboard`` also
    writes the ``log.csv`` scalars to ``RUN/tensorboard/``."""

    epochs: int = 300
    batch_size: int = 16
    optimizer: str = "adam"
    lr: float = 1e-3
    lr_decay: float = 0.99
    weight_decay: float = 0.0
    momentum: float = 0.9
    device: str = "auto"
    tensorboard: bool = False

    def __post_init__(self) -> None:
        check_choice("train.optimizer", self.optimizer, OPTIMIZERS)
        check_positive("train.epochs (--epochs)", self.epochs)
        check_positive("train.batch_size (--batch-size)", self.batch_size)
        if not self.lr > 0:
            raise MorphableError(f"train.lr (--lr) must be positive; got {self.lr}")
        check_range("train.weight_decay", self.weight_decay, 0.0, None)
        check_range("train.momentum", self.momentum, 0.0, 1.0, upper_open=True)
        check_range("train.lr_decay", self.lr_decay, 0.0, 1.0, lower_open=True)


@dataclass
class PCAConfig:
    """PCA baseline: ``latent`` principal components."""

    latent: int = 8

    def __post_init__(self) -> None:
        check_positive("model.latent (--latent)", self.latent)


@dataclass
class AutoencoderConfig:
    """Mesh autoencoder (``explicit.autoencoder.MeshAutoencoder``).

    ``conv``: ``cheb`` (Chebyshev, ``cheb_k`` terms) or ``spiral`` (``spiral_style`` ``spiralnet``:
    fixed ``spiral_length`` and ``spiral_dilation``; ``neural3dmm``: per-level ``spiral_hops`` and
    ``spiral_dilations``). ``pooling``: ``qem``, ``attention`` (Deep3DMM without fusing) or ``fused``.
    ``topk_encoder`` / ``topk_decoder``: top-k selection of the attention (0 switches it off).
    """

    latent: int = 8
    conv: str = "cheb"
    encoder_channels: list[int] = field(default_factory=lambda: [16, 16, 16, 32])
    decoder_channels: list[int] = field(default_factory=lambda: [32, 32, 16, 16, 16])
    activation: str = "elu"
    factors: list[int] = field(default_factory=lambda: [4, 4, 4, 4])
    cheb_k: int = 6
    spiral_style: str = "spiralnet"
    spiral_length: int = 9
    spiral_dilation: int = 1
    spiral_hops: list[int] = field(default_factory=lambda: [2, 2, 1, 1, 1])
    spiral_dilations: list[int] = field(default_factory=lambda: [2, 2, 1, 1, 1])
    pooling: str = "qem"
    attention_dim: int = 21
    topk_encoder: int = 8
    topk_decoder: int = 32
    fusion_init: list[float] = field(default_factory=lambda: [0.8, 0.2])

    def __post_init__(self) -> None:
        check_positive("model.latent (--latent)", self.latent)
        check_choice("model.conv", self.conv, ("cheb", "spiral"))
        check_choice("model.spiral_style", self.spiral_style, ("spiralnet", "neural3dmm"))
        check_choice("model.pooling", self.pooling, ("qem", "attention", "fused"))
        check_choice("model.activation", self.activation, ("elu", "relu", "leaky_relu"))


@dataclass
class LWAEConfig(AutoencoderConfig):
    """Locally weighted autoencoder (``explicit.lwae``): the CoMA network with ``parts`` part codes.

    Local weights: sparse NMF (``nmf_iterations`` sweeps from ``nmf_init``) of the train meshes'
    per-vertex displacement magnitudes, every part's column with Hoyer sparseness at least
    ``sparseness``; features and columns diffused over the mean shape with a width of ``smoothing`` (and
    half of it) times its bounding-box diagonal, then a partition of unity sharpened by the power
    ``sharpness``. ``part_graph``: the decoder's Chebyshev filters work on graphs whose edges are weighted by
    the probability that both ends lie in the same part. ``part_upsampling``: every decoder up-sampling takes a
    fine vertex's features only from coarse vertices of its own part. ``inject``: also add the locally weighted
    part codes after every decoder up-sampling. ``cycle_weight``: weight of the decompose-compose cycle loss.
    ``locality_weight``: weight of the swap-locality loss (the share of what swapping one part's code moves
    outside its region).
    """

    parts: int = 4
    sparseness: float = 0.5
    nmf_iterations: int = 500
    nmf_init: str = "nndsvd"
    sharpness: float = 32.0
    smoothing: float = 0.04
    part_graph: bool = True
    part_upsampling: bool = True
    inject: bool = True
    cycle_weight: float = 1.0
    locality_weight: float = 0.0


@dataclass
class ImplicitConfig:
    """Optimisation of an auto-decoded implicit identity model (thesis 5.2.2): codes of size ``latent`` in a
    table with ``max_norm``, SparseAdam at ``lr_latent`` for the codes (``TrainConfig.optimizer`` at ``TrainConfig.lr``
    for the network), step decays by ``TrainConfig.lr_decay`` every ``decay_interval`` / ``decay_interval_latent``
    epochs, gradient-norm clipping ``grad_clip`` / ``grad_clip_latent``. Points per shape and iteration:
    ``surface_face`` / ``surface_nonface`` (also per near-surface level) and ``ball``. ``loss_weights``
    overrides the method's default weights (``implicit.losses.LossWeights`` field names).
    ``radius``: the sphere the network starts as (geometric initialisation).

    2D objectives (thesis 4.2.3, on when ``views_per_step > 0``): every step renders ``views_per_step``
    ground-truth views of each shape in the batch (``<shape>_normals.npz`` of ``morphable data sdf``) at
    ``render_resolution`` pixels a side (the ground-truth maps' side divided by a whole stride: 32 of 64 is
    every other pixel of the same field of view) with the volume renderer's ``sampler`` (``fast`` or
    ``error_bounded``); the pi-GAN discriminator (widths divided by ``discriminator_width_divisor``) is
    trained with SGD at ``lr_discriminator`` and an R1 penalty ``r1_lambda E|grad D|^2`` (eq. 4.10) applied
    every ``r1_every`` steps and multiplied by it (lazy R1; 1: every step). ``stages``: the multi-stage
    schedule (``implicit.stages``: ``[{"start": epoch, "off": [losses]}]``; empty: one stage).
    """

    latent: int = 512
    max_norm: float = 1.0
    lr_latent: float = 1e-3
    grad_clip: float = 0.1
    grad_clip_latent: float = 0.1
    decay_interval: int = 1000
    decay_interval_latent: int = 2000
    surface_face: int = 750
    surface_nonface: int = 250
    ball: int = 300
    radius: float = 0.5
    loss_weights: dict[str, float] = field(default_factory=dict)
    views_per_step: int = 0
    render_resolution: int = 64
    sampler: str = "fast"
    lr_discriminator: float = 2e-4
    r1_lambda: float = 5.0
    r1_every: int = 1
    discriminator_width_divisor: int = 1
    stages: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        from morphable.implicit.stages import parse_stages

        check_positive("model.latent (--latent)", self.latent)
        check_range("model.views_per_step", self.views_per_step, 0, None)
        if self.render_resolution < 4 or self.render_resolution & (self.render_resolution - 1):
            raise MorphableError(f"model.render_resolution must be a power of two >= 4; got {self.render_resolution}")
        check_choice("model.sampler", self.sampler, SAMPLERS)
        check_range("model.lr_discriminator", self.lr_discriminator, 0.0, None, lower_open=True)
        check_range("model.r1_lambda", self.r1_lambda, 0.0, None)
        check_positive("model.r1_every", self.r1_every)
        check_positive("model.discriminator_width_divisor", self.discriminator_width_divisor)
        parse_stages(self.stages)
        for name in ("decay_interval", "decay_interval_latent", "surface_face", "ball"):
            check_positive(f"model.{name}", getattr(self, name))
        for name in ("grad_clip", "grad_clip_latent", "surface_nonface"):
            check_range(f"model.{name}", getattr(self, name), 0.0, None)
        check_range("model.max_norm", self.max_norm, 0.0, None, lower_open=True)
        check_range("model.lr_latent", self.lr_latent, 0.0, None, lower_open=True)


@dataclass
class NPMConfig(ImplicitConfig):
    """NPM identity network (``implicit.deepsdf.DeepSDF``): ``n_layers`` x ``hidden``, softplus ``beta``."""

    hidden: int = 1024
    n_layers: int = 8
    beta: float = 100.0


@dataclass
class TriplaneConfig(ImplicitConfig):
    """Tri-plane identity model (``implicit.triplane.TriplaneSDF``): ``channels`` x ``resolution``^2 planes
    from a DCGAN generator (``base_channels``), decoder ``n_layers`` x ``hidden``, softplus ``beta``."""

    channels: int = 32
    resolution: int = 256
    base_channels: int = 64
    hidden: int = 256
    n_layers: int = 5
    beta: float = 100.0


@dataclass
class ExpressionConfig:
    """Expression deformation field over a trained identity run (``implicit.deformation``, thesis 4.3), trained on
    a ``morphable data deform`` folder (``DataConfig.path``).

    ``identity``: the identity run (``npm`` / ``triplane``, trained on the folder's ``identity/`` SDF data), whose
    network and codes stay frozen. One expression code of size ``latent`` per sample of the folder (posed frames
    and each subject's neutral) in an auto-decoder table (SparseAdam at ``lr_latent``); the field is
    ``n_layers`` x ``hidden`` with softplus ``beta`` (``TrainConfig.optimizer`` at ``TrainConfig.lr``, gradient
    clipping ``grad_clip``, 0: none). Both rates are multiplied by ``TrainConfig.lr_decay`` every
    ``decay_interval`` epochs. ``pairs``: correspondence pairs per sample and step. ``correspondence``,
    ``penalty``, ``code``: the weights of eqs. 4.17, 4.19 and 4.20. The skip layer of the field takes
    ``[z_ex, z_id, x]``, so ``hidden`` must exceed ``latent`` + the identity code size + 3 (checked when the
    identity run is read).
    """

    identity: str = ""
    latent: int = 200
    hidden: int = 1024
    n_layers: int = 8
    beta: float = 100.0
    pairs: int = 1000
    lr_latent: float = 5e-4
    grad_clip: float = 0.025
    decay_interval: int = 1000
    correspondence: float = 1e2
    penalty: float = 1e-5
    code: float = 5e-5

    def __post_init__(self) -> None:
        for name in ("latent", "hidden", "n_layers", "pairs", "decay_interval"):
            check_positive(f"model.{name}", getattr(self, name))
        check_range("model.lr_latent", self.lr_latent, 0.0, None, lower_open=True)
        check_range("model.beta", self.beta, 0.0, None, lower_open=True)
        for name in ("grad_clip", "correspondence", "penalty", "code"):
            check_range(f"model.{name}", getattr(self, name), 0.0, None)


VRN_VARIANTS = ("plain", "guided", "multitask")


@dataclass
class VRNConfig:
    """VRN (``image.vrn``): ``variant`` plain / guided / multitask; the volume (``data.voxels.VolumeSpec``:
    ``size`` S crop pixels, ``depth`` D slices, ``depth_scale`` slices per crop pixel, crop ``fill``);
    ``features`` of the hourglasses, ``stacks`` of the volume network (plain, guided), ``landmark_features``
    and ``landmark_stacks`` of VRN-guided's landmark network, trained at ``landmark_lr_scale`` times the
    learning rate (paper 1: one rate for all); ``heatmap_weight`` on the heatmap MSE
    (guided's landmark network, multitask's landmark branch) beside the per-voxel cross-entropy, whose targets
    are Gaussians of ``heatmap_sigma`` heatmap pixels (the guide fed to the volume network keeps the paper's
    sigma 1 crop pixel); the
    learning rate (TrainConfig, RMSProp) is multiplied by 0.1 after ``lr_drop_epoch`` epochs (paper 40);
    ``augment``: the paper's jitter (``data.voxels.Augmentation``)."""

    variant: str = "plain"
    size: int = 192
    depth: int = 200
    depth_scale: float = 2.0
    fill: float = 0.5
    features: int = 256
    stacks: int = 2
    landmark_features: int = 128
    landmark_stacks: int = 2
    landmark_lr_scale: float = 1.0
    heatmap_weight: float = 10.0
    heatmap_sigma: float = 2.0
    lr_drop_epoch: int = 40
    augment: bool = True

    def __post_init__(self) -> None:
        from morphable.data.volume_spec import VolumeSpec

        check_choice("model.variant", self.variant, VRN_VARIANTS)
        VolumeSpec(self.size, self.depth, self.depth_scale, self.fill)
        if self.size % 2:
            raise MorphableError(f"model.size must be even (the hourglasses work at S / 2); got {self.size}")
        for name in ("features", "stacks", "landmark_features", "landmark_stacks", "lr_drop_epoch"):
            check_positive(f"model.{name}", getattr(self, name))
        check_positive("model.landmark_lr_scale", self.landmark_lr_scale)
        check_positive("model.heatmap_sigma", self.heatmap_sigma)
        check_range("model.heatmap_weight", self.heatmap_weight, 0.0, None)


HRN_LOSS_TERMS = ("photo", "perceptual", "landmark", "tv", "reg", "contour", "adversarial", "supervised")


@dataclass
class HRNConfig:
    """HRN (``image.hrn``, ``image.hrn_method``): crops of ``size`` pixels at template ``fill``; the coarse
    regressor a ResNet-``coarse_depth`` of stem width ``coarse_width`` to the identity, expression,
    ``albedo_components`` albedo (a PCA of the training identities' textures at ``albedo_height`` rows), pose
    and 27 SH coefficients; pix2pix U-Nets of width ``generator_width`` for the ``mid_size``-texel deformation
    map (bounded by ``mid_range_mm``) and the ``high_size``-texel displacement map (``high_range_mm``), faded in
    over ``fade_cm`` from the rest of the head; PatchGANs of width ``discriminator_width`` and
    ``discriminator_layers`` (non-saturating loss, lazy R1 ``r1_gamma`` every ``r1_every`` steps) at
    ``discriminator_lr_scale`` times the rate. Training: ``coarse_epochs`` of stage 0 at ``pretrain_lr_scale``
    times the rate (the coarse regressor
    supervised on the stored coefficients and landmarks, the identity embedding of the perceptual loss
    trained on identity labels, of ``identity_dim`` / ``identity_width``), then stage 1 (HRN: a
    self-supervised iteration, then a supervised one when ``supervised``), the coarse regressor at
    ``coarse_lr_scale`` times the rate (0: frozen). ``weights``: overrides of the supplement's loss weights
    (``image.hrn_losses.HRN_WEIGHTS``); ``augment`` jitters the crops (VRN's jitter without flips; off by
    default: HRN's crops are aligned by landmarks at test time too, and with the jitter the CPU preset's coarse
    regressor stayed at the mean prediction for 3 epochs, 8.0 px landmark error on validation, against 3.9 px
    after 2 epochs without)."""

    size: int = 224
    fill: float = 0.6
    coarse_depth: int = 50
    coarse_width: int = 64
    albedo_components: int = 80
    albedo_height: int = 128
    mid_size: int = 64
    high_size: int = 256
    mid_range_mm: float = 10.0
    high_range_mm: float = 2.0
    fade_cm: float = 1.0
    generator_width: int = 64
    discriminator_width: int = 64
    discriminator_layers: int = 3
    discriminator_lr_scale: float = 1.0
    r1_gamma: float = 1.0
    r1_every: int = 16
    identity_dim: int = 128
    identity_width: int = 16
    coarse_epochs: int = 20
    pretrain_lr_scale: float = 1.0
    coarse_lr_scale: float = 0.1
    supervised: bool = True
    weights: dict = field(default_factory=dict)
    augment: bool = False

    def __post_init__(self) -> None:
        for name in ("size", "coarse_width", "albedo_components", "albedo_height", "mid_size", "high_size",
                     "generator_width", "discriminator_width", "discriminator_layers", "r1_every", "identity_dim",
                     "identity_width"):
            check_positive(f"model.{name}", getattr(self, name))
        check_choice("model.coarse_depth", self.coarse_depth, (18, 34, 50, 101, 152))
        for name in ("mid_size", "high_size"):
            value = getattr(self, name)
            if value < 8 or value & (value - 1):
                raise MorphableError(f"model.{name} must be a power of two of at least 8 (the U-Net halves it down to "
                                     f"1 texel); got {value}")
        check_range("model.fill", self.fill, 0.0, 1.0, lower_open=True, upper_open=True)
        for name in ("mid_range_mm", "high_range_mm", "fade_cm", "discriminator_lr_scale", "pretrain_lr_scale"):
            check_range(f"model.{name}", getattr(self, name), 0.0, None, lower_open=True)
        check_range("model.r1_gamma", self.r1_gamma, 0.0, None)
        check_range("model.coarse_epochs", self.coarse_epochs, 0, None)
        check_range("model.coarse_lr_scale", self.coarse_lr_scale, 0.0, None)
        for term, value in self.weights.items():
            check_choice("a model.weights key", term, HRN_LOSS_TERMS)
            check_range(f"model.weights.{term}", value, 0.0, None)


@dataclass(frozen=True)
class MethodSpec:
    """What the registry knows of a method: its ``family`` (one of :data:`FAMILIES`), its model ``config``
    class, the class that implements it, ``implementation`` = ``"module:attribute"`` (imported lazily by
    :meth:`load`), and how it is trained: ``"loop"`` (a :class:`morphable.train.TrainableMethod` in the
    training loop) or ``"closed-form"`` (fitted in one call, e.g. PCA). The family's hooks live in
    ``morphable.<family>.experiment``."""

    family: str
    config: type
    implementation: str
    description: str
    training: str = "loop"

    def load(self) -> Any:
        """Import and return the implementing class."""
        module, _, attribute = self.implementation.partition(":")
        return getattr(importlib.import_module(module), attribute)


_AUTOENCODER = "morphable.explicit.method:AutoencoderMethod"
_VRN = "morphable.image.method:VRNMethod"
METHODS: dict[str, MethodSpec] = {
    "pca": MethodSpec("explicit", PCAConfig, "morphable.explicit.pca:PCAModel", "PCA 3DMM baseline",
                      training="closed-form"),
    "coma": MethodSpec("explicit", AutoencoderConfig, _AUTOENCODER, "CoMA: Chebyshev convolutions, QEM pooling"),
    "neural3dmm": MethodSpec("explicit", AutoencoderConfig, _AUTOENCODER, "Neural3DMM spiral convolutions"),
    "spiralnet++": MethodSpec("explicit", AutoencoderConfig, _AUTOENCODER, "SpiralNet++ spiral convolutions"),
    "deep3dmm-spectral": MethodSpec("explicit", AutoencoderConfig, _AUTOENCODER,
                                    "Deep3DMM learned aggregation, Chebyshev convolutions"),
    "deep3dmm-spiral": MethodSpec("explicit", AutoencoderConfig, _AUTOENCODER,
                                  "Deep3DMM learned aggregation, spiral convolutions"),
    "lwae": MethodSpec("explicit", LWAEConfig, "morphable.explicit.lwae:LWAEMethod",
                       "locally weighted autoencoder (part codes, sparse-NMF local weights)"),
    "npm": MethodSpec("implicit", NPMConfig, "morphable.implicit.method:ImplicitMethod",
                      "NPM / DeepSDF auto-decoder"),
    "triplane": MethodSpec("implicit", TriplaneConfig, "morphable.implicit.method:ImplicitMethod",
                           "tri-plane SDF auto-decoder"),
    "vrn": MethodSpec("image", VRNConfig, _VRN, "VRN: volumetric regression from one photo"),
    "vrn-guided": MethodSpec("image", VRNConfig, _VRN, "VRN-guided: landmark heatmaps stacked with the photo"),
    "vrn-multitask": MethodSpec("image", VRNConfig, _VRN, "VRN-multitask: shared hourglass, volume + landmarks"),
    "expression": MethodSpec("implicit", ExpressionConfig, "morphable.implicit.expression_method:ExpressionMethod",
                             "expression deformation field over a trained identity run (NPHM-style)"),
    "hrn": MethodSpec("image", HRNConfig, "morphable.image.hrn_method:HRNMethod",
                      "HRN: coarse 3DMM, UV deformation and displacement maps from one photo"),
}


def method_spec(method: str, source: str = "config") -> MethodSpec:
    """The registry entry of ``method``; an unknown method is a one-line error naming ``source``."""
    try:
        return METHODS[method]
    except (KeyError, TypeError):  # TypeError: not even a name (a list, a dict from a broken config.json)
        raise MorphableError(f"{source}: unknown method '{method}' (known: {', '.join(sorted(METHODS))})") from None


@dataclass
class ExperimentConfig:
    """Everything needed to reproduce a run."""

    method: str
    model: Any
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0

    @property
    def spec(self) -> MethodSpec:
        return method_spec(self.method)

    @property
    def family(self) -> str:
        return self.spec.family

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def config_from_dict(d: dict, source: str = "config.json") -> ExperimentConfig:
    """Rebuild an :class:`ExperimentConfig` from its dict form; unknown keys or values are an error."""
    if not isinstance(d, dict) or "method" not in d:
        raise MorphableError(f"{source}: no 'method' in the config")
    spec = method_spec(d["method"], source)
    try:
        return ExperimentConfig(
            method=d["method"],
            model=spec.config(**d.get("model", {})),
            data=DataConfig(**d.get("data", {})),
            train=TrainConfig(**d.get("train", {})),
            seed=int(d.get("seed", 0)),
        )
    except (TypeError, ValueError, OverflowError) as exc:  # wrong keys or value types, a seed like "" or inf
        raise MorphableError(f"{source}: does not match this version's config ({exc})") from None
    except MorphableError as exc:
        raise MorphableError(f"{source}: {exc}") from None


def _coma(pooling: str = "qem", method: str = "coma") -> ExperimentConfig:
    """CoMA paper defaults: Chebyshev K=6, filters [16,16,16,32], latent 8, SGD 8e-3 x0.99, wd 5e-4, batch 16."""
    return ExperimentConfig(method=method, model=AutoencoderConfig(pooling=pooling),
                            train=TrainConfig(epochs=300, batch_size=16, optimizer="sgd", lr=8e-3, lr_decay=0.99,
                                              weight_decay=5e-4, momentum=0.9))


def _lwae() -> ExperimentConfig:
    """Kim & Kim: CoMA's network and optimiser, latent 64, K = 4 parts, batch 32, 300 epochs; the decoder starts
    one level finer than CoMA's (three poolings, 79 coarse vertices on a 5k mesh), because each part is decoded
    from its own coarse vertices (``docs/lwae.md``)."""
    config = _coma(method="lwae")
    config.model = LWAEConfig(latent=64, factors=[4, 4, 4], encoder_channels=[16, 16, 32],
                              decoder_channels=[32, 16, 16, 16])
    config.train.batch_size = 32
    return config


SIMPLE_FILTERS = ([16, 16, 16, 32], [32, 32, 16, 16, 16])   # supplement Tables 1-2 ("simple", Table 6)
WIDER_FILTERS = ([16, 32, 64, 128], [128, 64, 32, 32, 16])  # supplement Table 6 "wider"


def _neural3dmm(filters: tuple[list[int], list[int]], pooling: str = "qem", method: str = "neural3dmm",
                hops: list[int] | None = None, dilations: list[int] | None = None, latent: int = 8
                ) -> ExperimentConfig:
    """Neural3DMM spirals (hops/dilation per level), ELU, Adam 1e-3 x0.99, 200 epochs (supplement Sec. 3)."""
    model = AutoencoderConfig(latent=latent, conv="spiral", spiral_style="neural3dmm",
                              encoder_channels=list(filters[0]), decoder_channels=list(filters[1]),
                              spiral_hops=hops or [1, 1, 1, 1, 1], spiral_dilations=dilations or [1, 1, 1, 1, 1],
                              pooling=pooling)
    return ExperimentConfig(method=method, model=model,
                            train=TrainConfig(epochs=200, batch_size=16, optimizer="adam", lr=1e-3, lr_decay=0.99))


def _spiralnet() -> ExperimentConfig:
    """SpiralNet++: channels [32,32,32,64], spiral length 9, dilation 1, latent 16, Adam 1e-3, batch 32."""
    model = AutoencoderConfig(latent=16, conv="spiral", spiral_style="spiralnet", spiral_length=9,
                              spiral_dilation=1, encoder_channels=[32, 32, 32, 64],
                              decoder_channels=[64, 64, 32, 32, 32])
    return ExperimentConfig(method="spiralnet++", model=model,
                            train=TrainConfig(epochs=300, batch_size=32, optimizer="adam", lr=1e-3, lr_decay=0.99))


def _implicit(method: str, model: ImplicitConfig, batch_size: int, epochs: int, lr: float = 5e-5) -> ExperimentConfig:
    """Thesis 5.2.2: AdamW lr 5e-5, weight decay 0.02, decay x0.75 (every 1000 epochs; codes 1e-3 every 2000),
    gradient clipping 0.1; batch 32 (NPM and 3D-only ablations) or 4 (tri-plane model)."""
    return ExperimentConfig(method=method, model=model,
                            train=TrainConfig(epochs=epochs, batch_size=batch_size, optimizer="adamw", lr=lr,
                                              lr_decay=0.75, weight_decay=0.02))


def _implicit_small(method: str, model: ImplicitConfig) -> ExperimentConfig:
    """CPU-sized: tiny network, 128 + 64 points per shape, higher learning rates, no clipping, 20 epochs."""
    small = dict(latent=16, lr_latent=1e-2, grad_clip=0.0, grad_clip_latent=0.0, surface_face=96, surface_nonface=32,
                 ball=64)
    for name, value in small.items():
        setattr(model, name, value)
    return _implicit(method, model, batch_size=2, epochs=20, lr=1e-3)


ABLATION_EPOCHS = 300
"""Total epochs of every CPU-sized ablation preset (thesis 6.3.1 on 2 CPU cores: see docs/implicit.md)."""
TP_SMALL = dict(channels=8, resolution=32, base_channels=16, hidden=32, n_layers=3)
NPM_3D_WEIGHTS = dict(surface=2.0, normal=0.3, eikonal=0.1, non_surface=0.01, density=0.0, total_variation=0.0,
                      triplane=0.0)
"""Thesis 5.2.2: NPM and the 3D-only ablations (no density, TV or plane terms; the tri-plane ablations have no
code term either, as Table 4.1)."""
PLANE_REGULARISER_WEIGHTS = dict(density=1e-5, total_variation=1e-4, triplane=1e-4)  # Table 4.1
NO_3D_WEIGHTS = dict(surface=0.0, normal=0.0, eikonal=0.0, non_surface=0.0)
"""TP_2D_reg: no 3D supervision; the thesis lists only nmr, g, d, edr, tv and tp, so eikonal and non-surface
terms are off too."""


def _with_views(config: ExperimentConfig, views: int = 2, resolution: int = 64, width_divisor: int = 1,
                lr_discriminator: float = 2e-4, r1_every: int = 1) -> ExperimentConfig:
    """``config`` with the 2D objectives: ``views`` rendered views per shape and step at ``resolution``."""
    model = config.model
    model.views_per_step, model.render_resolution = views, resolution
    model.discriminator_width_divisor, model.lr_discriminator, model.r1_every = width_divisor, lr_discriminator, r1_every
    return config


def _staged(config: ExperimentConfig, two_d_until: int, regularisers_until: int) -> ExperimentConfig:
    from morphable.implicit.stages import thesis_schedule

    config.model.stages = thesis_schedule(two_d_until, regularisers_until)
    return config


def _triplane_full() -> ExperimentConfig:
    """The thesis' full model (4.2, 5.2.2): the paper tri-plane network, Table 4.1's weights, 2 views of
    64 x 64 per shape and step, batch 4, AdamW 5e-5 / SparseAdam 1e-3 / SGD 2e-4, R1 lambda 5 every step,
    stages at 5000 and 8000 of 15000 epochs."""
    config = _with_views(_implicit("triplane", TriplaneConfig(), batch_size=4, epochs=15000))
    return _staged(config, 5000, 8000)


def _ablation(model: ImplicitConfig, weights: dict[str, float] | None = None, views: bool = False,
              staged: bool = False) -> ExperimentConfig:
    """CPU size of a thesis 6.3.1 ablation (``*-small`` networks and rates, batch 4, :data:`ABLATION_EPOCHS`);
    with ``views`` 2 maps of 32 x 32 (every other pixel of 64 x 64 ground truth), the discriminator at widths / 6
    with SGD at 4e-3 (the thesis' 2e-4 scaled like the network's rate, 20x) and lazy R1 every 16 steps;
    ``staged``: the thesis' stages at the same fractions of the run (5k / 8k of 15k)."""
    method = "npm" if isinstance(model, NPMConfig) else "triplane"
    config = _implicit_small(method, model)
    config.train.batch_size, config.train.epochs = 4, ABLATION_EPOCHS
    model.loss_weights = dict(weights or {})
    if views:
        _with_views(config, resolution=32, width_divisor=6, lr_discriminator=4e-3, r1_every=16)
    if staged:
        _staged(config, ABLATION_EPOCHS // 3, ABLATION_EPOCHS * 8 // 15)
    return config


def _triplane_full_small() -> ExperimentConfig:
    """The full model at the CPU size (also the ablation's "full")."""
    return _ablation(TriplaneConfig(**TP_SMALL), views=True, staged=True)


VRN_METHOD = {"plain": "vrn", "guided": "vrn-guided", "multitask": "vrn-multitask"}


def _vrn(variant: str) -> ExperimentConfig:
    """The paper's VRN: 192 x 192 crops, 200 slices, 256 features, RMSProp 1e-4 dropped to 1e-5 after 40
    epochs (60 in all here; the paper does not give the total)."""
    return ExperimentConfig(method=VRN_METHOD[variant], model=VRNConfig(variant=variant),
                            train=TrainConfig(epochs=60, batch_size=8, optimizer="rmsprop", lr=1e-4, lr_decay=1.0))


def _vrn_cpu(variant: str) -> ExperimentConfig:
    """VRN at half the paper's size for 2 CPU cores: 96 x 96 crops, 100 slices (the same x2 depth scale), 64
    features (landmark network 32, one stack). A step of batch 8 takes about 0.7 s on 2 cores (data included;
    about 1 s on one), so 16 epochs of the 1,920 training photos of a 2,400-photo dataset take about 45
    minutes; the lr drops after 12. Guided's small landmark network trains at 2.5 x the rate: with sigma-1
    targets at 1e-4 it stayed at chance (about 43 px mean error on 96-px crops) for 1,750 steps of batch 8, at
    2.5e-4 it reached 22 px after 1,700; with sigma-2 targets (the default) at 2.5e-4, 16 px after 700."""
    return ExperimentConfig(method=VRN_METHOD[variant],
                            model=VRNConfig(variant=variant, size=96, depth=100, features=64, landmark_features=32,
                                            landmark_stacks=1, landmark_lr_scale=2.5, lr_drop_epoch=12),
                            train=TrainConfig(epochs=16, batch_size=8, optimizer="rmsprop", lr=1e-4, lr_decay=1.0))


def _hrn() -> ExperimentConfig:
    """The paper's sizes: 224-pixel crops, ResNet-50, 64 x 64 deformation and 256 x 256 displacement maps,
    U-Nets and PatchGANs of width 64, Adam at 1e-4 (Deep3DFaceRecon's rate); 20 epochs of coarse pre-training,
    then 40 of HRN."""
    return ExperimentConfig(method="hrn", model=HRNConfig(),
                            train=TrainConfig(epochs=60, batch_size=8, optimizer="adam", lr=1e-4, lr_decay=1.0))


HRN_CPU_WEIGHTS = {"tv": 50.0, "reg": 0.1}
"""Regulariser weights that let the supervised maps be matched. With the maps in decimetres (the unit the
supplement's weights are for, ``image.hrn_method.HRN_UNIT_CM``), a ground-truth deformation map of the 1-mm mid
band has ``mean |M*| = 1.9e-3`` and ``TV(M*) = 6.9e-6``: ``5e3 TV(a M*) + |a M* - M*|`` is smallest at
``a = 0.03``, the supervision shrunk to 3 %; at 50, ``a = 1``. The displacement's ``10 mean |D|`` against a
unit-weight L1 to its target is smallest at ``D = 0`` whatever the target; at 0.1 the target wins."""


def _hrn_cpu() -> ExperimentConfig:
    """HRN for 2 CPU cores: 128-pixel crops, ResNet-18 of width 16, 64 x 64 deformation and 128 x 128
    displacement maps, U-Nets of width 16, PatchGANs of width 16 with 2 layers. A stage-1 step of batch 8
    (both renders, the backward and the two discriminators) takes about 1.5 s on one core and a supervised
    one about 0.6 s, a coarse pre-training step about 0.2 s, so 10 epochs of pre-training and 8 of HRN on the
    1,152 training photos of a 1,440-photo dataset take about 35 minutes; Adam at 2e-4, pre-training at 1e-3
    (at 2e-4 the coarse regressor's validation landmark error was 5.3 px after 2 epochs, at 1e-3 3.9 px)."""
    model = HRNConfig(size=128, coarse_depth=18, coarse_width=16, albedo_components=40, albedo_height=64,
                      high_size=128, generator_width=16, discriminator_width=16, discriminator_layers=2,
                      coarse_epochs=10, pretrain_lr_scale=5.0, weights=dict(HRN_CPU_WEIGHTS))
    return ExperimentConfig(method="hrn", model=model,
                            train=TrainConfig(epochs=18, batch_size=8, optimizer="adam", lr=2e-4, lr_decay=1.0))


def _expression() -> ExperimentConfig:
    """Thesis / NPHM size: 8 x 1024 field, expression codes of 200, 1000 pairs per sample, batch 32; NPHM's
    optimiser (``npm_def.yaml``): AdamW 1e-4, weight decay 1e-5, codes 5e-4, both x0.2 every 1000 epochs,
    gradient clipping 0.025. 4000 epochs is our choice (four decay intervals)."""
    return ExperimentConfig(method="expression", model=ExpressionConfig(),
                            train=TrainConfig(epochs=4000, batch_size=32, optimizer="adamw", lr=1e-4, lr_decay=0.2,
                                              weight_decay=1e-5))


EXPRESSION_SMALL_PENALTY = 1e2
"""The CPU preset's deformation-penalty weight: the thesis' 1e-5 does not hold the non-face region still on a
real ICT-FaceKit sequence (1.07 mm mean motion against 0.12 mm at 1e2, ``docs/implicit.md``)."""


def _expression_small() -> ExperimentConfig:
    """2 CPU cores: a 4 x 128 field, expression codes of 16, 500 pairs per sample, batch 16, Adam 1e-3 and codes
    1e-2 (decay x0.5 every 100 epochs), no clipping, 300 epochs."""
    model = ExpressionConfig(latent=16, hidden=128, n_layers=4, pairs=500, lr_latent=1e-2, grad_clip=0.0,
                             decay_interval=100, penalty=EXPRESSION_SMALL_PENALTY)
    return ExperimentConfig(method="expression", model=model,
                            train=TrainConfig(epochs=300, batch_size=16, optimizer="adam", lr=1e-3, lr_decay=0.5))


PRESETS: dict[str, Callable[[], ExperimentConfig]] = {  # every value's method is a key of METHODS
    "npm": lambda: _implicit("npm", NPMConfig(), batch_size=32, epochs=10000),
    "npm-small": lambda: _implicit_small("npm", NPMConfig(hidden=64, n_layers=4)),
    "triplane": lambda: _implicit("triplane", TriplaneConfig(), batch_size=4, epochs=15000),
    "triplane-small": lambda: _implicit_small("triplane", TriplaneConfig(**TP_SMALL)),
    "triplane-full": _triplane_full,
    "triplane-full-small": _triplane_full_small,
    "ablation-npm": lambda: _ablation(NPMConfig(hidden=64, n_layers=4)),
    "ablation-tp3d": lambda: _ablation(TriplaneConfig(**TP_SMALL), NPM_3D_WEIGHTS),
    "ablation-tp3d-reg": lambda: _ablation(TriplaneConfig(**TP_SMALL), {**NPM_3D_WEIGHTS, **PLANE_REGULARISER_WEIGHTS}),
    "ablation-tp2d-reg": lambda: _ablation(TriplaneConfig(**TP_SMALL), NO_3D_WEIGHTS, views=True),
    "ablation-full": _triplane_full_small,
    "pca": lambda: ExperimentConfig(method="pca", model=PCAConfig(latent=8)),
    "coma": _coma,
    "deep3dmm-spectral": lambda: _coma("fused", "deep3dmm-spectral"),
    "deep3dmm-spectral-nofuse": lambda: _coma("attention", "deep3dmm-spectral"),
    "neural3dmm": lambda: _neural3dmm(WIDER_FILTERS, hops=[2, 2, 1, 1, 1], dilations=[2, 2, 1, 1, 1], latent=16),
    "neural3dmm-simple": lambda: _neural3dmm(SIMPLE_FILTERS),
    "neural3dmm-wider": lambda: _neural3dmm(WIDER_FILTERS),
    "spiralnet++": _spiralnet,
    "deep3dmm-spiral": lambda: _neural3dmm(SIMPLE_FILTERS, "fused", "deep3dmm-spiral"),
    "deep3dmm-spiral-wider": lambda: _neural3dmm(WIDER_FILTERS, "fused", "deep3dmm-spiral"),
    "lwae": _lwae,
    "vrn": lambda: _vrn("plain"),
    "vrn-guided": lambda: _vrn("guided"),
    "vrn-multitask": lambda: _vrn("multitask"),
    "vrn-cpu": lambda: _vrn_cpu("plain"),
    "vrn-guided-cpu": lambda: _vrn_cpu("guided"),
    "vrn-multitask-cpu": lambda: _vrn_cpu("multitask"),
    "hrn": _hrn,
    "hrn-cpu": _hrn_cpu,
    "expression": _expression,
    "expression-small": _expression_small,
}
