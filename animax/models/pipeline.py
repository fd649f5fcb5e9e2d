"""The integrated pipeline: ViT -> SMAL head -> SMAL skinning -> head crop -> head encoder -> fusion.

The only module that knows all the others. `model.apply(variables, images)` with
`images [B, 256, 256, 3]` (ImageNet-normalised RGB crops) returns the dict of docs/architecture.md:

    feature_map [B,16,12,W]  visual_features [B,W]  cls_token [B,W]
    betas [B,41]  pose [B,35,3,3]  cam [B,3]  cam_t [B,3]
    vertices [B,V,3]  joints [B,35,3]  keypoints_3d [B,K,3]  keypoints_2d [B,K,2] (crop-normalised)
    head_box [B,4] (x1,y1,x2,y2 in crop pixels)  head_features [B,768]  fused_features [B,512]

With a `BodyModelBank` as body model (several species' meshes, animax/smal/bank.py), row b is
skinned by model `body_index[b]` (or by static `body_groups`), `vertices` are padded to the
largest model and `vertex_mask [B,V]` marks each row's real vertices.

With `train=True` it also returns `class_features` from the class-token head (for the
supervised-contrastive loss), the per-iteration SMAL head predictions and, with
`model.keypoint_heatmap`, the dense keypoint logits `keypoint_heatmap [B,16,12,K]`.

The body model's arrays are the variable collection `smal` (not parameters, not constants
baked into the compiled program): `variables = {"params": ..., "batch_stats": ..., "smal": ...}`,
so one compiled model serves any body model of the same layout.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from animax.geometry import project_to_crop, weak_cam_to_translation
from animax.models import vit
from animax.models.class_head import ClassTokenHead
from animax.models.fusion import make_fusion, smal_parameter_vector
from animax.models.head_encoder import HeadEncoder
from animax.models.keypoint_heatmap import WINDOW_WIDTH, WINDOW_X0, KeypointHeatmap, expected_keypoints
from animax.models.smal_head import SMALHead
from animax.runtime import exact_matmuls
from animax.smal.bank import BodyModelBank, skin
from animax.smal.model import SMALModel

# AniMer's network sees the centre 192 columns of the 256 x 256 crop.
BACKBONE_COLUMNS = slice(WINDOW_X0, WINDOW_X0 + WINDOW_WIDTH)


class Pipeline(nn.Module):
    """See the module docstring. `body_model` initialises the `smal` collection."""

    model_config: Any          # the `model` ConfigDict of configs/*.py, completed by `config.with_defaults`
    body_model: SMALModel | BodyModelBank

    def setup(self):
        cfg = self.model_config
        dtype = jnp.dtype(cfg.dtype)
        overrides = {k: cfg[k] for k in ("depth", "num_heads") if cfg[k]}
        self.backbone = vit.Model(cfg.variant, drop_path_rate=cfg.drop_path_rate, scan_blocks=cfg.scan_blocks,
                                  remat=cfg.remat, conv_stem=tuple(cfg.conv_stem),
                                  dtype=dtype, **overrides)
        head = cfg.smal_head
        self.smal_head = SMALHead(num_joints=self.body_model.num_joints, ief_iters=head.ief_iters,
                                  dim=head.dim, depth=head.depth, heads=head.heads, dim_head=head.dim_head,
                                  mlp_dim=head.mlp_dim, rest_init=head.rest_init, dtype=dtype)
        self.class_token_head = ClassTokenHead(hidden_dim=cfg.class_head.hidden,
                                               output_dim=cfg.class_head.features, dtype=dtype)
        enc = cfg.head_encoder
        self.head_encoder = HeadEncoder(widths=tuple(enc.widths), features=enc.features, crop=enc.crop,
                                        margin=enc.margin, min_size=enc.min_size, kind=enc.kind,
                                        vit=None if enc.vit is None else dict(enc.vit), dtype=dtype)
        self.fusion = make_fusion(cfg.fusion, dtype)
        # Dense keypoint readout (from-scratch configs; keypoint_heatmap.py): a training signal,
        # and with smal_head.keypoint_query the keypoints the SMAL head's query starts from.
        self.keypoint_heatmap = (KeypointHeatmap(self.body_model.num_keypoints)
                                 if cfg.keypoint_heatmap else None)
        self.keypoint_query = head.keypoint_query
        if self.keypoint_query and self.keypoint_heatmap is None:
            raise ValueError("model.smal_head.keypoint_query needs model.keypoint_heatmap")
        self.smal = self.variable("smal", "model", lambda: self.body_model)

    def __call__(self, images, train: bool = False, body_index=None, body_groups=None):
        backbone = self.backbone(images[:, :, BACKBONE_COLUMNS], train=train)
        heatmap = None if self.keypoint_heatmap is None else self.keypoint_heatmap(backbone["feature_map"])
        query = expected_keypoints(heatmap).reshape(len(images), -1) if self.keypoint_query else None
        smal = self.smal_head(backbone["feature_map"], query)
        with exact_matmuls():        # geometry in float32 at HIGHEST whatever the compute dtype
            cam_t = weak_cam_to_translation(smal["cam"])
            body = skin(self.smal.value, smal["betas"], smal["pose"], body_index, body_groups)
            keypoints_2d = project_to_crop(body["keypoints_3d"], cam_t)
        head_features, head_box = self.head_encoder(images, keypoints_2d)
        visual = backbone["patch_tokens"].mean(axis=1)
        fused = self.fusion(visual, head_features, smal_parameter_vector(smal["betas"], smal["pose"], smal["cam"]))
        out = {
            "feature_map": backbone["feature_map"], "visual_features": visual,
            "cls_token": backbone["cls_token"], "betas": smal["betas"], "pose": smal["pose"],
            "cam": smal["cam"], "cam_t": cam_t, **body, "keypoints_2d": keypoints_2d,
            "head_box": head_box, "head_features": head_features, "fused_features": fused,
        }
        if train or self.is_initializing():
            out["class_features"] = self.class_token_head(backbone["cls_token"], train=train)
            out.update({k: smal[k] for k in ("pose_6d_iters", "betas_iters", "cam_iters")})
            if heatmap is not None:
                out["keypoint_heatmap"] = heatmap
        return out
