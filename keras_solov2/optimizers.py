"""The official SOLOv2 optimisation recipe as Keras objects."""

import keras


@keras.saving.register_keras_serializable(package="keras_solov2")
class WarmupStepSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up followed by step decay, mmdetection's schedule.

    The rate rises linearly from `base_learning_rate * warmup_ratio` at step 0
    to `base_learning_rate` at `warmup_steps`, then is multiplied by `gamma`
    at each of `milestones` (in steps).

    Args:
        base_learning_rate: float. Defaults to `0.01`.
        milestones: tuple of ints, steps at which the rate decays.
        warmup_steps: int. Defaults to `500`.
        warmup_ratio: float. Defaults to `0.01` (the original SOLO configs;
            mmdetection uses 1/3 for 3x and 0.001 for 1x).
        gamma: float. Decay factor. Defaults to `0.1`.
    """

    def __init__(
        self,
        base_learning_rate=0.01,
        milestones=(),
        warmup_steps=500,
        warmup_ratio=0.01,
        gamma=0.1,
    ):
        self.base_learning_rate = float(base_learning_rate)
        self.milestones = tuple(int(m) for m in milestones)
        self.warmup_steps = int(warmup_steps)
        self.warmup_ratio = float(warmup_ratio)
        self.gamma = float(gamma)

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        rate = ops.convert_to_tensor(self.base_learning_rate, "float32")
        for milestone in self.milestones:
            rate = ops.where(step >= milestone, rate * self.gamma, rate)
        if self.warmup_steps > 0:
            progress = ops.minimum(step / self.warmup_steps, 1.0)
            factor = self.warmup_ratio + (1.0 - self.warmup_ratio) * progress
            rate = rate * factor
        return rate

    def get_config(self):
        return {
            "base_learning_rate": self.base_learning_rate,
            "milestones": self.milestones,
            "warmup_steps": self.warmup_steps,
            "warmup_ratio": self.warmup_ratio,
            "gamma": self.gamma,
        }


SCHEDULES = {"1x": (12, (9, 11)), "3x": (36, (27, 33))}


def solov2_optimizer(
    steps_per_epoch,
    schedule="3x",
    batch_size=16,
    base_learning_rate=0.01,
    warmup_steps=500,
    warmup_ratio=0.01,
):
    """SGD as in the official SOLOv2 configs, ready for `model.compile`.

    SGD with momentum 0.9, weight decay 1e-4, gradient clipping at a global
    norm of 35, linear warm-up and a step schedule: epochs 27 and 33 of 36
    for `"3x"`, epochs 9 and 11 of 12 for `"1x"` (the original SOLO steps).
    The rate scales linearly with `batch_size / 16`.

    Keras applies weight decay decoupled from the momentum, where PyTorch adds
    it to the gradient; the difference is small at this decay.

    Args:
        steps_per_epoch: int. Optimizer steps per epoch.
        schedule: str. `"1x"` or `"3x"`. Defaults to `"3x"`.
        batch_size: int. Global batch size. Defaults to `16`.
        base_learning_rate: float. Rate at batch 16. Defaults to `0.01`.
        warmup_steps: int. Defaults to `500`.
        warmup_ratio: float. Defaults to `0.01`.

    Returns:
        `(optimizer, epochs)`: a `keras.optimizers.SGD` and the number of
        epochs of the schedule.

    Example:
    >>> optimizer, epochs = keras_solov2.solov2_optimizer(steps_per_epoch=100)
    >>> model.compile(optimizer=optimizer)
    """
    if schedule not in SCHEDULES:
        raise ValueError(
            f"`schedule` must be one of {sorted(SCHEDULES)}, got {schedule!r}."
        )
    epochs, milestone_epochs = SCHEDULES[schedule]
    learning_rate = WarmupStepSchedule(
        base_learning_rate=base_learning_rate * batch_size / 16,
        milestones=tuple(e * steps_per_epoch for e in milestone_epochs),
        warmup_steps=warmup_steps,
        warmup_ratio=warmup_ratio,
    )
    optimizer = keras.optimizers.SGD(
        learning_rate=learning_rate,
        momentum=0.9,
        weight_decay=1e-4,
        global_clipnorm=35.0,
    )
    return optimizer, epochs
