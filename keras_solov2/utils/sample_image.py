"""A small image that ships with the package, for trying `predict` offline.

`shapes.jpg` (320 x 240, about 18 KB) is a synthetic-shapes image, made by
`keras_solov2.data.render_shapes_image` (nothing to license): a square over a
circle, a star and a small square on a gradient. It is written by

```
pixels, _ = keras_solov2.data.render_shapes_image(
    0, image_size=(240, 320), seed=1, min_shapes=3
)
PIL.Image.fromarray(pixels).save("shapes.jpg", quality=90, subsampling=0)
```
"""

import os


def sample_image_path():
    """The path of the bundled sample image, `shapes.jpg` (320 x 240 RGB).

    It is package data, so it is there in a wheel install as in a checkout.

    Example:
    ```python
    model = keras_solov2.SOLOv2.from_preset("light_r18_coco")
    path = keras_solov2.utils.sample_image_path()
    image = np.asarray(PIL.Image.open(path).convert("RGB"))
    outputs = model.predict(image[None])
    ```

    Returns:
        str. An absolute path to a JPEG file.
    """
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "shapes.jpg")
