"""The model's configuration: every architecture knob, with AniMer's values as defaults.

configs/*.py build experiment configs on top of `model_config()`; checkpoints store it
in config.json, so a checkpoint rebuilds its own model.
"""

import ml_collections


def model_config() -> ml_collections.ConfigDict:
    model = ml_collections.ConfigDict()
    model.variant = "H/16"          # ViT variant: width/depth/heads/MLP decoded from "H/16", "L/16", ...
    model.depth = None              # overrides the variant's depth (tests use 1-2 blocks)
    model.num_heads = None          # overrides the variant's attention heads
    model.drop_path_rate = 0.55     # stochastic depth at the last block in training (AniMer: 0.55)
    model.scan_blocks = False       # nn.scan over the ViT blocks: one compiled block, faster compiles (training
                                    # configs); unrolled runs faster (docs/performance.md)
    model.remat = "none"            # recompute block activations in the backward pass (saves memory):
                                    # "none", "full" (only block inputs kept), "dots" (dense-layer
                                    # outputs kept); animax.models.vit.REMAT_POLICIES
    model.conv_stem = ()            # widths of early 3x3 stride-2 convolutions added to the patch embedding,
                                    # log2(16) = 4 of them; () = none (AniMer; models/vit.py ConvStem)
    model.keypoint_heatmap = False  # dense keypoint readout on the patch tokens: the `keypoint_heatmap` loss,
                                    # and the query's keypoints with smal_head.keypoint_query (from scratch;
                                    # models/keypoint_heatmap.py)
    model.dtype = "float32"         # compute dtype: "float32" or "bfloat16" (params stay float32)

    head = model.smal_head = ml_collections.ConfigDict()
    head.dim = 1024                 # decoder width
    head.depth = 6                  # decoder layers
    head.heads = 8
    head.dim_head = 64
    head.mlp_dim = 1024
    head.ief_iters = 1              # refinement iterations (AniMer's released config: 1)
    head.rest_init = False          # from-scratch start: pose from the rest pose, readouts near 0 (not AniMer)
    head.keypoint_query = False     # the query also reads the keypoints of model.keypoint_heatmap (soft-argmax;
                                    # not AniMer; models/keypoint_heatmap.py)

    enc = model.head_encoder = ml_collections.ConfigDict()
    enc.kind = "cnn"                # "cnn" | "vit" (animax.models.head_encoder.HEAD_ENCODERS)
    enc.widths = (32, 64, 128, 256, 512)  # cnn: conv stage widths (each stage halves the resolution)
    enc.vit = ml_collections.ConfigDict(  # vit: the backbone's ViT, small, over the head crop
        {"width": 192, "depth": 4, "num_heads": 3, "mlp_dim": 768, "patch_size": 16})
    enc.features = 768              # head feature size
    enc.crop = 224                  # head crop resolution
    enc.margin = 0.4                # box side = head keypoint extent x (1 + margin)
    enc.min_size = 32.0             # smallest box side, in pixels of the 256 crop

    fusion = model.fusion = ml_collections.ConfigDict()
    fusion.kind = "mlp"             # "mlp" | "transformer" (animax.models.fusion.FUSIONS)
    fusion.features = 512           # fused feature size
    fusion.hidden = 1024            # mlp: hidden width
    fusion.transformer = ml_collections.ConfigDict(
        {"dim": 256, "depth": 2, "heads": 4, "mlp_dim": 512})   # transformer: tokens, blocks

    cls = model.class_head = ml_collections.ConfigDict()
    cls.hidden = 4096               # AniMer's class-token head widths
    cls.features = 256
    return model


def with_defaults(stored) -> ml_collections.ConfigDict:
    """A model config as stored (a config file's `model`, a checkpoint's config.json, perhaps
    written before some knob existed) with every knob it lacks at its default above: the one
    place that holds the defaults."""
    def merged(defaults: dict, values: dict) -> dict:
        out = dict(defaults)
        for key, value in values.items():
            both_dicts = isinstance(value, dict) and isinstance(defaults.get(key), dict)
            out[key] = merged(defaults[key], value) if both_dicts else value
        return out

    stored = stored.to_dict() if isinstance(stored, ml_collections.ConfigDict) else dict(stored)
    return ml_collections.ConfigDict(merged(model_config().to_dict(), stored))


def tiny_model_config() -> ml_collections.ConfigDict:
    """AniMer's model shrunk to seconds on a CPU, with the same outputs (ViT-Ti/16, 2 blocks,
    small heads): the random-weights demo of `infer.py` and configs/tiny.py."""
    model = model_config()
    model.variant = "Ti/16"         # width 192, 3 heads
    model.depth = 2
    model.drop_path_rate = 0.1
    # The head's token width bounds the rank of its readout: 64 could not carry the ~150 degrees
    # of freedom of pose, shape and camera (it did not even fit 64 examples; docs/training.md).
    model.smal_head.update(dim=256, depth=1, heads=2, dim_head=32, mlp_dim=64)
    model.head_encoder.widths = (8, 16, 16, 32, 32)
    model.head_encoder.crop = 64
    model.fusion.hidden = 128
    model.class_head.update(hidden=64, features=32)
    return model
