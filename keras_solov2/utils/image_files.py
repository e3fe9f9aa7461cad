"""Which files are images: the one list of image file extensions.

`keras-solov2 predict` (`keras_solov2.inference.image_paths`) and the int8
calibration folder of `keras_solov2.export.tflite` pick a folder's images
by these extensions (compared in lower case). Every one of them is a format
that Pillow reads, as `load_image` does.
"""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
