"""SOLOv2 architecture presets and the official COCO checkpoints they load.

Every number comes from the official configs (mmdetection 3.x
`configs/solov2/*`, WXinlong/SOLO); see the reference notes in the README.
"""

COCO_CLASS_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck",
    "boat", "traffic light", "fire hydrant", "stop sign", "parking meter", "bench",
    "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
    "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "wine glass", "cup",
    "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)  # fmt: skip

# The official COCO 2017 category id of each class of `COCO_CLASS_NAMES`, in
# the same order: 1..90 without the 10 ids that COCO left unused (12, 26, 29,
# 30, 45, 66, 68, 69, 71, 83). Label `k` of a COCO model is category
# `COCO_CATEGORY_IDS[k]`.
COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
    24, 25, 27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46,
    47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65,
    67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89,
    90,
)  # fmt: skip

FULL_SCALE_RANGES = ((1, 96), (48, 192), (96, 384), (192, 768), (384, 2048))
LIGHT_SCALE_RANGES = ((1, 56), (28, 112), (56, 224), (112, 448), (224, 896))
# Keep-ratio `(long, short)` training scales, one drawn per image: the 3x
# multi-scale recipes (the full models: 1333 x 800 down to 640; the light
# ones: 768 x 512 down to 352, in steps of 32) and the 1x single scale.
# `keras_solov2.training` trains at the model's `train_scales`.
FULL_TRAIN_SCALES = tuple((1333, s) for s in (800, 768, 736, 704, 672, 640))
LIGHT_TRAIN_SCALES = tuple((768, s) for s in (512, 480, 448, 416, 384, 352))
SINGLE_TRAIN_SCALE = ((1333, 800),)


def _full(depth):
    return {
        "backbone": {
            "depth": depth,
            "num_grids": (40, 36, 24, 16, 12),
            "head_channels": 512,
            "stacked_convs": 4,
            "kernel_channels": 256,
        },
        "task": {
            "scale_ranges": FULL_SCALE_RANGES,
            "test_scale": (1333, 800),
            "train_scales": FULL_TRAIN_SCALES,
        },
    }


def _light(depth):
    return {
        "backbone": {
            "depth": depth,
            "num_grids": (40, 36, 24, 16, 12),
            "head_channels": 256,
            "stacked_convs": 2,
            "kernel_channels": 128,
        },
        "task": {
            "scale_ranges": LIGHT_SCALE_RANGES,
            "test_scale": (768, 448),
            "train_scales": LIGHT_TRAIN_SCALES,
        },
    }


ARCHITECTURES = {
    "r50": _full(50),
    "r101": _full(101),
    "light_r18": _light(18),
    "light_r34": _light(34),
    "light_r50": _light(50),
}

_MMDET = "https://download.openmmlab.com/mmdetection/v2.0/solov2/"

# Official mmdetection checkpoints (COCO val2017 mask AP from its model zoo).
PRESETS = {
    "r50_1x_coco": {
        "architecture": "r50",
        "description": "SOLOv2 R50-FPN, 1x schedule, single-scale training.",
        "url": _MMDET
        + "solov2_r50_fpn_1x_coco/solov2_r50_fpn_1x_coco_20220512_125858-a357fa23.pth",
        "sha256_prefix": "a357fa23",
        "coco_mask_ap": 34.8,
        "train_scales": SINGLE_TRAIN_SCALE,
    },
    "r50_coco": {
        "architecture": "r50",
        "description": "SOLOv2 R50-FPN, 3x schedule, multi-scale training.",
        "url": _MMDET
        + "solov2_r50_fpn_3x_coco/solov2_r50_fpn_3x_coco_20220512_125856-fed092d4.pth",
        "sha256_prefix": "fed092d4",
        "coco_mask_ap": 37.5,
    },
    "r101_coco": {
        "architecture": "r101",
        "description": "SOLOv2 R101-FPN, 3x schedule, multi-scale training.",
        "url": _MMDET + "solov2_r101_fpn_3x_coco/"
        "solov2_r101_fpn_3x_coco_20220511_095119-c559a076.pth",
        "sha256_prefix": "c559a076",
        "coco_mask_ap": 39.1,
    },
    "light_r18_coco": {
        "architecture": "light_r18",
        "description": "SOLOv2-Light R18-FPN (448), 3x schedule, multi-scale.",
        "url": _MMDET + "solov2_light_r18_fpn_3x_coco/"
        "solov2_light_r18_fpn_3x_coco_20220511_083717-75fa355b.pth",
        "sha256_prefix": "75fa355b",
        "coco_mask_ap": 29.7,
    },
    "light_r34_coco": {
        "architecture": "light_r34",
        "description": "SOLOv2-Light R34-FPN (448), 3x schedule, multi-scale.",
        "url": _MMDET + "solov2_light_r34_fpn_3x_coco/"
        "solov2_light_r34_fpn_3x_coco_20220511_091839-e51659d3.pth",
        "sha256_prefix": "e51659d3",
        "coco_mask_ap": 31.9,
    },
    "light_r50_coco": {
        "architecture": "light_r50",
        "description": "SOLOv2-Light R50-FPN (448), 3x schedule, multi-scale.",
        "url": _MMDET + "solov2_light_r50_fpn_3x_coco/"
        "solov2_light_r50_fpn_3x_coco_20220512_165256-c93a6074.pth",
        "sha256_prefix": "c93a6074",
        "coco_mask_ap": 33.7,
    },
}
for _name, _preset in PRESETS.items():
    _preset["num_classes"] = 80
    _preset["class_names"] = COCO_CLASS_NAMES
    _preset["category_ids"] = COCO_CATEGORY_IDS
    _task = ARCHITECTURES[_preset["architecture"]]["task"]
    _preset["test_scale"] = _task["test_scale"]
    _preset.setdefault("train_scales", _task["train_scales"])
