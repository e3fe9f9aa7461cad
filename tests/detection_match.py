"""Matching two sets of detections: the agreement measure of the export tests."""

import numpy as np


def match_detections(reference, candidate, mask_key="masks", threshold=0.5):
    """Greedy one-to-one matching of `candidate` detections to `reference`'s.

    Both are dicts of one image's outputs with a batch axis of 1 (`labels`,
    `scores`, `num_detections` and masks under `mask_key`; probabilities are
    binarised at `threshold`). Each reference detection, best score first,
    takes the unused candidate of the same label with the highest mask IoU.

    Returns:
        dict: `ious` and `score_diffs` (one per reference detection; IoU 0
        and the reference score when nothing of its label is left), and the
        two detection counts.
    """
    n_ref = int(np.asarray(reference["num_detections"]).reshape(-1)[0])
    n_can = int(np.asarray(candidate["num_detections"]).reshape(-1)[0])

    def binary(outputs, n):
        masks = np.asarray(outputs[mask_key])[0, :n]
        masks = masks > threshold if masks.dtype != bool else masks
        return masks.reshape(n, int(np.prod(masks.shape[1:])))

    ref_masks, can_masks = binary(reference, n_ref), binary(candidate, n_can)
    ref_labels = np.asarray(reference["labels"])[0, :n_ref]
    can_labels = np.asarray(candidate["labels"])[0, :n_can]
    ref_scores = np.asarray(reference["scores"])[0, :n_ref]
    can_scores = np.asarray(candidate["scores"])[0, :n_can]
    inter = ref_masks.astype(np.float64) @ can_masks.T.astype(np.float64)
    union = ref_masks.sum(1)[:, None] + can_masks.sum(1)[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    used = np.zeros(n_can, bool)
    ious, diffs = [], []
    for i in np.argsort(-ref_scores, kind="stable"):
        options = np.where((can_labels == ref_labels[i]) & ~used)[0]
        if options.size == 0:
            ious.append(0.0)
            diffs.append(float(ref_scores[i]))
            continue
        j = options[np.argmax(iou[i, options])]
        used[j] = True
        ious.append(float(iou[i, j]))
        diffs.append(float(abs(ref_scores[i] - can_scores[j])))
    return {
        "ious": np.asarray(ious),
        "score_diffs": np.asarray(diffs),
        "num_reference": n_ref,
        "num_candidate": n_can,
    }
