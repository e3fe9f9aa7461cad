"""The official SOLOv2 optimisation recipe as Keras objects."""

import keras
from keras import ops


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


@keras.saving.register_keras_serializable(package="keras_solov2")
class TorchSGD(keras.optimizers.Optimizer):
    """SGD with PyTorch's update rule and `clip_grad_norm_`, as mmdetection.

    The official SOLOv2 models were trained with `torch.optim.SGD` inside
    mmengine's `OptimWrapper`. This optimizer takes the same step in Keras.
    For each update, with `g` the gradient of variable `w`:

    1. If `max_grad_norm` is set, all gradients are clipped together, as
       `torch.nn.utils.clip_grad_norm_` does:
       `total = sqrt(sum_i ||g_i||^2)`,
       `g_i *= min(max_grad_norm / (total + 1e-6), 1)`.
    2. `d = g + weight_decay * w` (coupled decay, added to the clipped
       gradient).
    3. `buf = momentum * buf + d` (the buffer starts at zero, so its first
       value is `d`, as in torch).
    4. `w -= learning_rate * buf`, or `w -= learning_rate * (d + momentum *
       buf)` with `nesterov=True`.

    This differs from `keras.optimizers.SGD` in two ways. Keras applies
    `weight_decay` outside the momentum (`w -= lr * wd * w`), so with momentum
    0.9 PyTorch's decay is about 10 times stronger in steady state. Keras also
    folds the learning rate into the buffer (`m = mu * m - lr * g`), while
    PyTorch multiplies the buffer by the current rate; the two disagree
    whenever the rate changes, i.e. all through a warm-up and after each
    step decay. Keras' `global_clipnorm` also has no `1e-6` and, under
    `tf.distribute`, clips each replica's gradients before they are summed.

    Here the clipping runs on the gradients that the update uses: after the
    replicas' gradients are summed (`tf.distribute` strategies), and after
    averaging when `gradient_accumulation_steps` is set (mmengine clips the
    accumulated gradients too). Variables that get no gradient in a step are
    left out of the norm and not updated, not even decayed, as in torch.
    `exclude_from_weight_decay()` works as in Keras and exempts variables
    from the coupled decay (mmdetection's `paramwise_cfg` with a decay
    multiplier of 0). PyTorch's `dampening` and `maximize` are not offered;
    the norm is always L2 and is computed in float32.

    Args:
        learning_rate: float or `keras.optimizers.schedules.LearningRateSchedule`.
            A schedule is read at the step count before each update (as
            mmengine's schedulers set the rate before `optimizer.step()`);
            with `gradient_accumulation_steps`, Keras counts micro-steps.
            Defaults to `0.01`.
        momentum: float. Momentum factor, `>= 0`. Defaults to `0.0`.
        weight_decay: float. Coupled (L2) decay factor, `>= 0`, PyTorch's
            `weight_decay`. Defaults to `0.0`.
        nesterov: bool. PyTorch's Nesterov momentum; needs `momentum > 0`.
            Defaults to `False`.
        max_grad_norm: float or `None`. `max_norm` of
            `torch.nn.utils.clip_grad_norm_` (mmengine's
            `clip_grad=dict(max_norm=...)`), applied to the global L2 norm of
            all gradients. `None` disables clipping. Defaults to `None`.
        clipnorm, clipvalue, global_clipnorm: must stay `None`. Keras' own
            clipping follows other rules; use `max_grad_norm`.
        **kwargs: the other arguments of `keras.optimizers.Optimizer`
            (`use_ema`, `ema_momentum`, `ema_overwrite_frequency`,
            `loss_scale_factor`, `gradient_accumulation_steps`, `name`).

    Example:
    >>> optimizer = keras_solov2.optimizers.TorchSGD(
    ...     learning_rate=0.01, momentum=0.9, weight_decay=1e-4,
    ...     max_grad_norm=35.0,
    ... )
    >>> model.compile(optimizer=optimizer, jit_compile=True)

    Reference:
        Wang et al., "SOLOv2: Dynamic and Fast Instance Segmentation",
        NeurIPS 2020, arXiv 2003.10152 (training: Sec. 3.1), trained with
        this rule through mmdetection; PyTorch's `torch.optim.SGD` and
        `torch.nn.utils.clip_grad_norm_`.
    """

    def __init__(
        self,
        learning_rate=0.01,
        momentum=0.0,
        weight_decay=0.0,
        nesterov=False,
        max_grad_norm=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        **kwargs,
    ):
        given = {
            "clipnorm": clipnorm,
            "clipvalue": clipvalue,
            "global_clipnorm": global_clipnorm,
        }
        given = {key: value for key, value in given.items() if value is not None}
        if given:
            raise ValueError(
                f"TorchSGD does not take Keras' clipping arguments, got {given}. "
                "Use `max_grad_norm`, which clips the global norm as "
                "`torch.nn.utils.clip_grad_norm_` does."
            )
        super().__init__(learning_rate=learning_rate, **kwargs)
        momentum = float(momentum)
        weight_decay = float(weight_decay)
        if momentum < 0:
            raise ValueError(f"`momentum` must be >= 0, got {momentum}.")
        if weight_decay < 0:
            raise ValueError(f"`weight_decay` must be >= 0, got {weight_decay}.")
        if nesterov and momentum == 0:
            raise ValueError("`nesterov=True` needs `momentum > 0`.")
        if max_grad_norm is not None:
            max_grad_norm = float(max_grad_norm)
            if not max_grad_norm > 0:
                raise ValueError(
                    f"`max_grad_norm` must be > 0 or None, got {max_grad_norm}."
                )
        self.momentum = momentum
        # The base class reads `weight_decay` as its decoupled decay only in
        # `_apply_weight_decay`, which is disabled below.
        self.weight_decay = weight_decay
        self.nesterov = bool(nesterov)
        self.max_grad_norm = max_grad_norm

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums = []
        if self.momentum != 0:
            self.momentums = self.add_optimizer_variables(variables, "momentum")

    def _apply_weight_decay(self, variables):
        # Keras' decoupled decay; this optimizer couples it in `update_step`.
        return

    def clip_gradients_by_global_norm(self, grads):
        """Scales `grads` as `torch.nn.utils.clip_grad_norm_`.

        Args:
            grads: list of gradient tensors (`None` entries are kept and left
                out of the norm).

        Returns:
            The list of gradients, scaled by
            `min(max_grad_norm / (total_norm + 1e-6), 1)`; unchanged when
            `max_grad_norm` is `None`.
        """
        if self.max_grad_norm is None:
            return list(grads)
        present = [g for g in grads if g is not None]
        if not present:
            return list(grads)
        norms = [ops.sqrt(ops.sum(ops.square(ops.cast(g, "float32")))) for g in present]
        total_norm = ops.sqrt(ops.sum(ops.square(ops.stack(norms))))
        scale = ops.minimum(self.max_grad_norm / (total_norm + 1e-6), 1.0)
        return [None if g is None else g * ops.cast(scale, g.dtype) for g in grads]

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if keras.backend.backend() != "tensorflow":
            grads = self.clip_gradients_by_global_norm(grads)
            return super()._backend_update_step(
                grads, trainable_variables, learning_rate
            )
        # TensorFlow sums the replicas' gradients inside its
        # `_backend_update_step`; the clipping happens there, after the sum
        # (see `_all_reduce_sum_gradients`).
        self._clipped_after_reduction = False
        super()._backend_update_step(grads, trainable_variables, learning_rate)
        if not self._clipped_after_reduction:
            raise RuntimeError(
                "TorchSGD could not clip the gradients: this Keras version's "
                "TensorFlow optimizer no longer calls `_all_reduce_sum_gradients`."
            )

    def _all_reduce_sum_gradients(self, grads_and_vars):
        # TensorFlow backend only (a hook of Keras' TFOptimizer).
        grads_and_vars = list(super()._all_reduce_sum_gradients(grads_and_vars))
        grads = self.clip_gradients_by_global_norm([g for g, _ in grads_and_vars])
        self._clipped_after_reduction = True
        return [(g, v) for g, (_, v) in zip(grads, grads_and_vars, strict=True)]

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        step = ops.cast(gradient, variable.dtype)
        if self.weight_decay != 0 and self._use_weight_decay(variable):
            step = step + ops.cast(self.weight_decay, variable.dtype) * variable
        if self.momentum != 0:
            momentum = ops.cast(self.momentum, variable.dtype)
            buffer = self.momentums[self._get_variable_index(variable)]
            new_buffer = momentum * buffer + step
            self.assign(buffer, new_buffer)
            if self.nesterov:
                step = step + momentum * new_buffer
            else:
                step = new_buffer
        self.assign_sub(variable, learning_rate * step)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "weight_decay": self.weight_decay,
                "nesterov": self.nesterov,
                "max_grad_norm": self.max_grad_norm,
            }
        )
        return config


# Epochs and step-decay epochs of each schedule (the original SOLO steps).
SCHEDULES = {"1x": (12, (9, 11)), "3x": (36, (27, 33))}
# The one default schedule: of `solov2_optimizer`, `keras_solov2.training.train`
# and `keras-solov2 train`. "1x" (12 epochs) is the shortest official
# schedule, and `train` fine-tunes COCO weights by default; "3x" (36 epochs)
# is the recipe that trained the released 3x checkpoints from ImageNet.
DEFAULT_SCHEDULE = "1x"


def solov2_optimizer(
    steps_per_epoch=None,
    schedule=DEFAULT_SCHEDULE,
    batch_size=16,
    base_learning_rate=0.01,
    warmup_steps=500,
    warmup_ratio=0.01,
):
    """SGD as in the official SOLOv2 configs, ready for `model.compile`.

    `keras_solov2.optimizers.TorchSGD` with momentum 0.9, coupled weight decay
    1e-4 and gradient clipping at a global norm of 35: the update of
    `torch.optim.SGD` after `clip_grad_norm_`, as mmdetection trains. The rate
    follows a linear warm-up and a step schedule: epochs 27 and 33 of 36 for
    `"3x"`, epochs 9 and 11 of 12 for `"1x"` (the original SOLO steps), and
    scales linearly with `batch_size / 16`.

    `keras.optimizers.SGD` with the same numbers trains differently: its
    decay sits outside the momentum (about 10 times weaker in steady state at
    momentum 0.9), and it folds the rate into the momentum, which changes the
    steps whenever the rate changes (the whole warm-up and each decay).

    Args:
        steps_per_epoch: int or `None`. Optimizer steps per epoch. `None`
            gives the warm-up and then a constant rate (no step decay): the
            default optimizer of `SOLOv2.compile()`.
        schedule: str. `"1x"` or `"3x"`. Defaults to `"1x"`
            (`keras_solov2.optimizers.DEFAULT_SCHEDULE`, the default of
            `keras-solov2 train` too). The presets were trained with `"3x"`
            (`r50_1x_coco` with `"1x"`).
        batch_size: int. Global batch size. Defaults to `16`.
        base_learning_rate: float. Rate at batch 16. Defaults to `0.01`.
        warmup_steps: int. Defaults to `500`.
        warmup_ratio: float. Defaults to `0.01`.

    Returns:
        `(optimizer, epochs)`: a `keras_solov2.optimizers.TorchSGD` with a
        `WarmupStepSchedule`, and the number of epochs of the schedule.

    Example:
    >>> optimizer, epochs = keras_solov2.solov2_optimizer(steps_per_epoch=100)
    >>> model.compile(optimizer=optimizer, jit_compile=True)

    Reference: SOLOv2 §3.1, arXiv 2003.10152; the optimizer and clipping of
    mmdetection's `configs/solov2`.
    """
    if schedule not in SCHEDULES:
        raise ValueError(
            f"`schedule` must be one of {sorted(SCHEDULES)}, got {schedule!r}."
        )
    epochs, milestone_epochs = SCHEDULES[schedule]
    learning_rate = WarmupStepSchedule(
        base_learning_rate=base_learning_rate * batch_size / 16,
        milestones=()
        if steps_per_epoch is None
        else tuple(e * int(steps_per_epoch) for e in milestone_epochs),
        warmup_steps=warmup_steps,
        warmup_ratio=warmup_ratio,
    )
    optimizer = TorchSGD(
        learning_rate=learning_rate,
        momentum=0.9,
        weight_decay=1e-4,
        max_grad_norm=35.0,
    )
    return optimizer, epochs
