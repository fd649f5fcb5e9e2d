"""The descriptor on the shipped demo model: `fused_features` trained to tell the families apart.

    python train.py --config configs/standin_descriptor.py --workdir runs/standin_descriptor

Starts from the shipped model (animax/assets/standin_demo) and trains only the head encoder
and the fusion (config.trainable = "descriptor") with the supervised-contrastive descriptor
term on the stand-in scenes' five shape families; the pose model stays exactly as shipped.
Evaluations log retrieval of the same family beside PCK; step 0 is the untrained descriptor.
"""

from configs import standin_demo


def get_config():
    config = standin_demo.get_config()
    config.name = "standin_descriptor"
    config.init.kind = "animer"                  # every parameter from the model directory below
    config.init.path = "animax/assets/standin_demo"
    config.trainable = "descriptor"

    config.loss.weights.descriptor_family = 1.0
    config.batch_size = 32                       # about six images of each of the five families per batch
    config.num_train_steps = 1500
    config.eval_every_steps = 250
    config.checkpoint.every_steps = 250
    config.optim.learning_rate = 1e-3
    config.optim.warmup_steps = 100
    return config
