"""AniMer stage-2 training on Animal3D (+ CtrlAni3D): the reference for every training knob.

    python train.py --config configs/animal3d.py --workdir runs/animal3d [--config.key=value ...]

The other training configs (animer_stage1.py, horse10_finetune.py, standin.py) are this one
plus a list of changes. Model knobs and their defaults: animax/models/config.py.
"""

import ml_collections
from ml_collections.config_dict import placeholder

from animax.models.config import model_config


def get_config():
    config = ml_collections.ConfigDict()
    config.name = "animal3d"
    config.model = model_config()       # ViT-H/16 AniMer + the seed's head branch and fusion
    config.smal = placeholder(str)      # SMAL .pkl/.npz path; unset = the built-in stand-in quadruped;
                                        # comma-separated paths ('standin' = the built-in): several meshes
                                        # in one batch (animax/smal/bank.py)
    config.model.scan_blocks = True     # training compiles one ViT block (forward + backward) instead of 32
    config.seed = 0                     # parameter init, LoRA init, drop-path and data order

    # ---- data (animax/data; "synthetic_inline" = the in-memory source of animax/train/synthetic.py)
    data = config.data = ml_collections.ConfigDict()
    data.name = "animal3d"              # dataset: "animal3d", "horse10", "synthetic_quadruped", "synthetic_inline"
    data.root = placeholder(str)        # folder the dataset was built into (python -m animax.data.build ... --data_dir)
    data.mixture = placeholder(str)     # "DATASET:WEIGHT,..." built in data.root, mixed per example (AniMer stage 2:
                                        # "animal3d:1.0,ctrlani3d:0.5,<2D sets>:0.15"); unset: data.name alone
    data.train_split = "train"
    data.eval_split = "test"            # held-out split for PCK / PA-MPJPE
    data.eval_examples = placeholder(int)  # evaluate on the first N held-out examples (unset: the whole split)
    data.eval_sets = placeholder(str)   # --mode eval: "DATASET:SPLIT,..." in data.root, each reported in AniMer's
                                        # layout (unset: data.name's eval_split; training always evaluates that)
    data.augment = True                 # AniMer's augmentation (scale 0.3, rot 30 deg @0.6, trans 0.02, colour 0.2)
    data.antialias = False              # blur training crops first (AniMer's DATASETS.USE_SKIMAGE_ANTIALIAS, off
                                        # there); evaluation never blurs. Inference keeps its demo blur.
    data.device_crop = False            # crop training and evaluation examples in the jitted steps: the loader
                                        # sends uint8 windows (animax/image/device_warp.py); same crops within
                                        # float32 rounding, host workers spared the warp
    data.device_crop_window = 512       # their side: a crop reading more of the picture (a box over 280-390 px,
                                        # scaled up to 1.3x and rotated) is made on the host and sent as its window
    data.gt_fraction = 1.0              # synthetic_inline only: share of examples with SMAL parameter GT
    data.train_examples = placeholder(int)  # synthetic_inline only: train on examples 0..N-1 over and over
                                        # (the overfitting probe of docs/training.md); unset: always new ones
    data.max_yaw_degrees = 180.0        # synthetic_inline only: headings within this of side-on (>= 90: any)
    data.source_keypoints = 0           # batch each dataset's own keypoints too, padded to this many (Horse-10: 22)
    data.worker_count = 4               # grain worker processes per host (0 = in-process)
    data.prefetch = 2                   # training batches made ahead on a background thread (0 = none)

    config.batch_size = 16              # global batch per optimizer step, all processes together (AniMer: 16)
    config.grad_accum_steps = 1         # micro-batches per step (batch_size / k each); gradients are averaged
    config.eval_batch_size = 32         # global evaluation batch

    # ---- schedule
    config.num_train_steps = 200_000
    config.log_every_steps = 50         # train metrics to JSONL / TensorBoard / progress bar
    config.eval_every_steps = 1000      # held-out PCK@0.1 and PA-MPJPE; a checkpoint with metrics follows
    config.eval_at_start = True         # also evaluate the initial state (step 0: the curves' starting point)
    config.eval_overlays = 8            # validation overlays (infer.py's) in TensorBoard at every evaluation; 0 = none
    config.max_nonfinite_steps = 20     # stop after this many consecutive non-finite steps (each is skipped)

    # ---- checkpoints (WORKDIR/checkpoints; a run resumes from the latest automatically)
    ckpt = config.checkpoint = ml_collections.ConfigDict()
    ckpt.every_steps = 1000             # periodic checkpoint (besides those after evaluations)
    ckpt.keep_best = 1                  # best k by `best_metric` kept beside the latest (AniMer: top 1)
    ckpt.best_metric = "pck@0.1"        # an evaluation metric: "pck@0.1" or "pa_mpjpe"
    ckpt.best_mode = "max"              # "max" for PCK, "min" for PA-MPJPE
    ckpt.async_save = True              # write in the background while training goes on
    ckpt.export = True                  # at the end, WORKDIR/export: merged (LoRA) weights for animax.load_model

    # ---- initialisation
    init = config.init = ml_collections.ConfigDict()
    init.kind = "animer"                # "scratch", "backbone" (converted ViTPose backbone.pth) or "animer"
    init.path = placeholder(str)        # converted checkpoint directory (convert_weights.py output);
                                        # needed unless scratch

    # ---- what trains
    config.trainable = "full"           # "full", "frozen_backbone", "lora" (adapters on ViT qkv/proj + heads),
                                        # or "descriptor" (only the head encoder and the fusion)
    lora = config.lora = ml_collections.ConfigDict()
    lora.rank = 8                       # adapter rank r
    lora.alpha = 16.0                   # the update is (alpha / r) * A @ B

    # ---- optimizer: AdamW, linear warm-up then cosine decay, global-norm clipping
    optim = config.optim = ml_collections.ConfigDict()
    optim.learning_rate = 1.25e-6       # peak learning rate (AniMer stage 2)
    optim.warmup_steps = 1000
    optim.end_lr_factor = 0.0           # final learning rate = factor x peak
    optim.weight_decay = 1e-4           # on Dense/Conv kernels only: not on norms, biases, embeddings
    optim.b1 = 0.9
    optim.b2 = 0.999
    optim.eps = 1e-8
    optim.grad_clip_norm = 1.0          # clip the global gradient norm; 0 = off

    # ---- parallelism (jax.sharding): mesh axes ('data', 'fsdp'); the batch is split over both
    mesh = config.mesh = ml_collections.ConfigDict()
    mesh.data = -1                      # data-parallel size; -1 = all devices / fsdp
    mesh.fsdp = 1                       # parameter/optimizer-state sharding size (1 = replicated)
    mesh.fsdp_min_bytes = 4 * 2**20     # smaller leaves (biases, norm scales) stay replicated, as
                                        # big_vision's fsdp rule: splitting them saves little memory
                                        # and costs a gather per use
    mesh.zero1 = False                  # ZeRO-1: optimizer state split over all devices (data x fsdp), whatever
                                        # fsdp does with the parameters; per-device AdamW bytes / device count
    # Compute dtype and activation recomputation are model knobs: config.model.dtype
    # ("bfloat16" on accelerators; parameters stay float32) and config.model.remat.

    # ---- losses (animax/train/losses.py defines each term)
    loss = config.loss = ml_collections.ConfigDict()
    weights = loss.weights = ml_collections.ConfigDict()
    weights.keypoints_3d = 0.05         # AniMer
    weights.keypoints_2d = 0.01         # AniMer
    weights.global_orient = 0.001       # AniMer: rotation-matrix MSE of the root joint (has_pose samples)
    weights.global_orient_6d = 0.0      # animax: the root's raw 6D output (no 180-degree saddle; losses.py)
    weights.pose = 0.001                # AniMer: rotation-matrix MSE of joints 1..34 (has_pose samples)
    weights.betas = 0.0005              # AniMer: shape MSE (has_betas samples)
    weights.shape_prior = 0.0005        # AniMer (its betas weight): family shape prior, samples without shape GT
    weights.pose_prior = 0.001          # AniMer ((global_orient + pose weights) / 2): samples without pose GT
    weights.supcon = 0.0005             # AniMer: supervised contrastive on class-token features
    weights.adversarial = 0.0           # AniMer stage 1: 0.0005, the discriminator prior (configs/animer_stage1.py)
    weights.betas_l2 = 0.0              # seed: ||betas||^2 (off in AniMer's stage 2)
    weights.pose_smoothness = 0.0       # seed: first-order difference of rotations along the chain
    weights.fused_l2 = 0.0              # seed: ||fused_features||^2
    weights.source_keypoints_2d = 0.0   # animax: the dataset's own keypoints via loss.source_keypoint_map
    weights.vertices = 0.0              # animax: per-vertex L1 to the GT parameters' mesh (has_betas & has_pose)
    weights.descriptor_family = 0.0     # animax: supervised contrastive on fused_features, family labels
    weights.descriptor_identity = 0.0   # animax: the same with individual identity (Horse-10's 30 horses)
    weights.keypoint_heatmap = 0.0      # animax: dense keypoint logits on the patch tokens (needs
                                        # model.keypoint_heatmap; from-scratch configs)
    loss.supcon_temperature = 0.1       # AniMer
    loss.supcon_base_temperature = 0.07 # AniMer
    loss.descriptor_temperature = 0.1   # the descriptor terms' temperature (on unit vectors)
    loss.source_keypoint_map = placeholder(str)  # a keypoint map (name or .py) whose to_smal / to_vertices predict
                                        # the dataset's own keypoints (needs data.source_keypoints)
    loss.shape_prior_path = placeholder(str)  # my_smpl_data_00781_4_all.pkl; unset: the shape-prior term is 0
    loss.pose_prior_path = placeholder(str)   # walking_toy_symmetric_pose_prior_with_cov_35parts.pkl; unset: 0
    return config
