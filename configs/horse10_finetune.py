"""Fine-tuning a converted AniMer checkpoint on Horse-10 (2D keypoints only) with LoRA.

    python train.py --config configs/horse10_finetune.py --workdir runs/horse10 \
        --config.init.path=checkpoints/animer_converted --config.data.root=/data/horse10

Every knob is documented in configs/animal3d.py; only the changes are listed here.
`--config=configs/horse10_finetune.py:tiny` is the same recipe on configs/tiny.py's model
for a few CPU steps (the fine-tuning notebook's offline mode; init.path then holds a tiny
checkpoint).

Horse-10 has no 3D keypoints and no SMAL parameters, so the 2D keypoints drive the fit and
the priors (set their paths) and the seed's regularisers keep shape and pose plausible.
"""

from animax.models.config import tiny_model_config
from configs import animal3d


def get_config(variant: str = ""):
    if variant not in ("", "tiny"):
        raise ValueError(f"unknown variant {variant!r}: use configs/horse10_finetune.py or ...:tiny")
    config = animal3d.get_config()
    config.name = "horse10_finetune"
    config.data.name = "horse10"
    config.data.eval_split = "test"
    # data.eval_examples stays unset: the whole held-out split.

    config.init.kind = "animer"
    config.trainable = "lora"             # adapters on the ViT attention; heads train fully
    config.lora.rank = 16
    config.lora.alpha = 32.0

    config.num_train_steps = 20_000
    config.eval_every_steps = 500
    config.checkpoint.every_steps = 500
    config.optim.learning_rate = 1e-4     # adapters start at zero and need a larger step than full fine-tuning
    config.optim.warmup_steps = 500

    weights = config.loss.weights
    weights.keypoints_2d = 0.01
    weights.keypoints_3d = 0.0            # no 3D ground truth in Horse-10
    weights.betas_l2 = 1e-4
    weights.pose_smoothness = 1e-3
    weights.fused_l2 = 1e-5
    # Set config.loss.shape_prior_path / pose_prior_path to the SMAL prior files: without 3D
    # labels the priors are what keeps shape and pose plausible.
    config.checkpoint.best_metric = "pck@0.1"

    if variant == "tiny":
        config.name = "horse10_finetune_tiny"
        config.model = tiny_model_config()
        config.batch_size = 4
        config.eval_batch_size = 8
        config.data.eval_examples = 16
        config.data.worker_count = 0
        config.num_train_steps = 20
        config.log_every_steps = 5
        config.eval_every_steps = 10
        config.checkpoint.every_steps = 10
        config.optim.warmup_steps = 5
    return config
