import keras
from keras import ops

from keras_solov2.layers.live_settings import LiveSettings
from keras_solov2.layers.opencv_resize import resize_like_opencv
from keras_solov2.layers.spatial import resize
from keras_solov2.utils import image_geometry


@keras.saving.register_keras_serializable(package="keras_solov2")
class SOLOv2ImageConverter(LiveSettings, keras.layers.Layer):
    """SOLOv2's test-time resize and padding (mmdetection's test pipeline).

    Keeps the aspect ratio while resizing to `test_scale` (mmcv's
    `imrescale`: the largest factor that keeps the long side within
    `max(test_scale)` and the short side within `min(test_scale)`), then pads
    at the bottom and right with `PIXEL_MEAN` up to a multiple of
    `size_divisor`. The images stay on the 0..255 scale: the model's graph
    normalises them (`keras_solov2.layers.PixelNormalization`), and the mean
    padding becomes mmdetection's zero padding there. The geometry itself
    lives in `keras_solov2.utils.image_geometry`, shared with the readers.

    uint8 inputs are resized bit-exactly like OpenCV's `INTER_LINEAR` (what
    mmdetection does), whether their size is static or known only at run
    time (a function traced for any size, a SavedModel); float inputs with
    float bilinear interpolation.

    Settings (changeable on a built model; `SOLOv2` forwards them, so
    `model.test_scale = (1333, 800)` takes effect at the next `predict`):
        test_scale: `(long, short)` keep-ratio test resize, or `None` to run
            at the input size. Defaults to `(1333, 800)`.
        size_divisor: int. Padding multiple. Defaults to `32`.

    Example:
    >>> converter = keras_solov2.models.SOLOv2ImageConverter((768, 448))
    >>> padded, resized_size, original_size = converter.preprocess(images)

    Reference: SOLOv2, arXiv 2003.10152 (test scales in §4).
    """

    SETTINGS = ("test_scale", "size_divisor")

    def __init__(
        self, test_scale=(1333, 800), size_divisor=image_geometry.SIZE_DIVISOR, **kwargs
    ):
        super().__init__(**kwargs)
        self.test_scale = test_scale
        self.size_divisor = size_divisor
        self.built = True  # no weights

    def validate_setting(self, name, value):
        if name == "test_scale":
            if value is None:
                return None
            try:
                value = tuple(int(v) for v in value)
            except (TypeError, ValueError):
                value = ()
            if len(value) != 2 or min(value) < 1:
                raise ValueError(
                    "`test_scale` must be None or a (long, short) pair of positive "
                    f"ints, e.g. (1333, 800); got {value!r}."
                )
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`size_divisor` must be a positive int, got {value!r}.")
        return value

    def resized_size(self, height, width):
        """Keep-ratio size for `test_scale`: Python ints when static."""
        if self.test_scale is None:
            return height, width
        long_edge, short_edge = max(self.test_scale), min(self.test_scale)
        if isinstance(height, int) and isinstance(width, int):
            return image_geometry.rescale_size(height, width, self.test_scale)
        # float64, as mmcv computes in Python floats: the same size to the
        # pixel (float32 is off by one for some sizes).
        h = ops.cast(height, "float64")
        w = ops.cast(width, "float64")
        factor = image_geometry.rescale_factor(h, w, long_edge, short_edge, ops)
        return tuple(
            ops.cast(image_geometry.scaled_length(v, factor, ops), "int32")
            for v in (h, w)
        )

    def preprocess(self, images):
        """Resizes and pads a batch, inside the graph.

        Args:
            images: `(batch, H, W, 3)` RGB on the 0..255 scale.

        Returns:
            `(padded, resized_size, original_size)`: float32 `(batch, H', W',
            3)` raw images padded with `PIXEL_MEAN`, and the `(height, width)`
            of the resized image inside them and of the original image
            (Python ints when static).
        """
        is_uint8 = "uint8" in str(images.dtype)
        height, width = ops.shape(images)[1], ops.shape(images)[2]
        if not (isinstance(height, int) and isinstance(width, int)):
            # A retrace with one side relaxed to `None` gives an int and a
            # tensor; the decoder's call takes either two ints or two tensors.
            height, width = (ops.convert_to_tensor(v, "int32") for v in (height, width))
        original_size = (height, width)
        resized_size = self.resized_size(height, width)
        if self.test_scale is None:
            resized = ops.cast(images, "float32")
        elif is_uint8:
            resized = resize_like_opencv(images, resized_size)
        else:
            resized = resize(ops.cast(images, "float32"), resized_size, "bilinear")
        padded_size = tuple(
            image_geometry.padded_length(v, self.size_divisor) for v in resized_size
        )
        padded = image_geometry.pad_with_mean(
            resized, padded_size, ops, image_size=resized_size
        )
        return padded, resized_size, original_size

    def get_config(self):
        config = super().get_config()
        config.update(self.settings())
        return config
