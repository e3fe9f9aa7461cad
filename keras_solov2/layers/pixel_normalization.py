import keras

from keras_solov2.utils import image_geometry


@keras.saving.register_keras_serializable(package="keras_solov2")
class PixelNormalization(keras.layers.Layer):
    """`(images - PIXEL_MEAN) / PIXEL_STD`: the first step of SOLOv2's graph.

    Every entry point of `keras_solov2.SOLOv2` (`fit`, `evaluate`, `predict`,
    `model(images)`) takes raw RGB images on the 0..255 scale; this layer
    normalises them with the ImageNet statistics, as mmdetection's
    `DetDataPreprocessor` does. Padding with `PIXEL_MEAN`
    (`keras_solov2.utils.image_geometry.pad_with_mean`, which the readers and
    the model's test-time preprocessing use) becomes exactly zero, so the
    network sees mmdetection's zero padding after normalisation.

    Call arguments:
        images: `(batch, H, W, 3)` RGB on the 0..255 scale, any real or
            integer dtype.

    Returns:
        float32 `(batch, H, W, 3)`.
    """

    def call(self, images):
        return image_geometry.normalize(keras.ops.cast(images, "float32"))

    def compute_output_shape(self, input_shape):
        return input_shape
