"""A laptop-CPU training run: the tiny model from scratch on synthetic quadrupeds.

    python train.py --config configs/synthetic_tiny.py --workdir runs/tiny

Every knob is documented in configs/animal3d.py; only the changes are listed here.
"""

from configs import animal3d, tiny


def get_config():
    config = animal3d.get_config()
    config.name = "synthetic_tiny"
    config.model = tiny.get_config().model  # ViT-Ti/16 x 2 blocks, small heads (configs/tiny.py)

    config.data.name = "synthetic_inline"   # the in-memory source (animax/train/synthetic.py)
    config.data.eval_examples = 128
    config.data.augment = False
    config.data.worker_count = 0

    config.batch_size = 8
    config.eval_batch_size = 32
    config.num_train_steps = 6000
    config.log_every_steps = 25
    config.eval_every_steps = 250
    config.checkpoint.every_steps = 250
    config.init.kind = "scratch"

    config.optim.learning_rate = 5e-4
    config.optim.warmup_steps = 200
    config.optim.weight_decay = 1e-4
    # From scratch the 2D keypoints are what the held-out PCK measures, so they weigh more
    # than in AniMer's fine-tuning; the seed's regularisers are on, lightly.
    config.loss.weights.keypoints_2d = 0.1
    config.loss.weights.betas_l2 = 1e-4
    config.loss.weights.pose_smoothness = 1e-4
    config.loss.weights.fused_l2 = 1e-5
    return config
