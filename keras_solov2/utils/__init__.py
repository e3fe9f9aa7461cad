from keras_solov2.utils.sample_image import sample_image_path

__all__ = ["sample_image_path"]
