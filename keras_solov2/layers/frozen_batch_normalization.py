import keras


@keras.saving.register_keras_serializable(package="keras_solov2")
class FrozenBatchNormalization(keras.layers.BatchNormalization):
    """Batch normalisation that can keep its statistics frozen while training.

    With `norm_eval=True` (mmdetection's `norm_eval`), the layer always runs in
    inference mode, using its moving mean and variance, but its `gamma` and
    `beta` stay trainable unless the layer itself is frozen. This is what the
    official SOLOv2 recipe does with the ImageNet-pretrained ResNet. With
    `norm_eval=False` it is an ordinary `BatchNormalization`, which is what
    training from scratch needs.

    Args:
        norm_eval: bool. Always normalise with the moving statistics.
            Defaults to `True`.
        epsilon: float. Defaults to `1e-5` (PyTorch's value).
        momentum: float. Defaults to `0.9` (PyTorch's 0.1).
        **kwargs: Arguments of `keras.layers.BatchNormalization`.
    """

    def __init__(self, norm_eval=True, epsilon=1e-5, momentum=0.9, **kwargs):
        super().__init__(epsilon=epsilon, momentum=momentum, **kwargs)
        self.norm_eval = norm_eval

    def call(self, inputs, training=None, mask=None):
        if self.norm_eval:
            training = False
        return super().call(inputs, training=training, mask=mask)

    def get_config(self):
        config = super().get_config()
        config["norm_eval"] = self.norm_eval
        return config
