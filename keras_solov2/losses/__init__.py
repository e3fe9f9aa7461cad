from keras_solov2.losses.dice import dice_loss
from keras_solov2.losses.focal import sigmoid_focal_loss

__all__ = ["dice_loss", "sigmoid_focal_loss"]
