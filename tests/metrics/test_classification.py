import itertools
import math

import numpy as np
import pytest
import torch

from medgen.metrics import DiceMetric, RankingMetrics, auprc, auroc, dice, dice_per_class


def brute_auroc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def brute_auprc(scores, labels):
    """Average precision from the definition: every distinct threshold t, predict s >= t."""
    n_pos = sum(labels)
    points = []
    for t in sorted(set(scores), reverse=True):
        pred = [s >= t for s in scores]
        tp = sum(p and y for p, y in zip(pred, labels))
        points.append((tp / n_pos, tp / sum(pred)))
    ap, prev_recall = 0.0, 0.0
    for recall, precision in points:
        ap += (recall - prev_recall) * precision
        prev_recall = recall
    return ap


def test_dice_hand_masks():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2, :2] = True          # 4 voxels
    b[1:3, :2] = True         # 4 voxels, 2 shared
    assert dice(a, b) == pytest.approx(2 * 2 / 8)
    assert dice(a, a) == 1.0
    assert dice(a, ~a) == 0.0
    assert math.isnan(dice(np.zeros((4, 4)), np.zeros((4, 4))))


def test_dice_batch_mean_skips_empty_pairs():
    p = torch.zeros(3, 1, 4, 4)
    t = torch.zeros(3, 1, 4, 4)
    p[0, 0, 0, 0] = t[0, 0, 0, 0] = 1      # perfect
    p[1, 0, 0, 0] = 1                       # miss -> 0
    # sample 2 empty on both sides: left out
    assert dice(p, t) == pytest.approx(0.5)
    acc = DiceMetric()
    acc.update(p[:1], t[:1])
    acc.update(p[1:], t[1:])
    assert acc.aggregate() == pytest.approx(0.5)


def test_dice_per_class():
    target = np.array([[0, 1, 1, 2], [0, 2, 2, 2]])
    pred = np.array([[0, 1, 2, 2], [1, 2, 2, 0]])
    # class 1: pred {(0,1),(1,0)}, target {(0,1),(0,2)} -> 2*1/4; class 2: pred 4, target 4, shared 3
    assert dice_per_class(pred, target) == pytest.approx({1: 0.5, 2: 0.75})
    assert set(dice_per_class(pred, target, include_background=True)) == {0, 1, 2}


def test_auroc_auprc_hand_example_with_ties():
    scores = [0.9, 0.8, 0.8, 0.7, 0.5, 0.5, 0.5, 0.1]
    labels = [1, 1, 0, 1, 0, 1, 0, 0]
    # positives 0.9, 0.8, 0.7, 0.5 vs negatives 0.8, 0.5, 0.5, 0.1:
    # 0.9 beats 4; 0.8 beats 3 ties 1; 0.7 beats 3; 0.5 beats 1 ties 2 -> 12.5 / 16
    assert auroc(scores, labels) == pytest.approx(12.5 / 16)
    assert auroc(scores, labels) == pytest.approx(brute_auroc(scores, labels))
    # thresholds 0.9 (R .25 P 1), 0.8 (R .5 P 2/3), 0.7 (R .75 P 3/4), 0.5 (R 1 P 4/7), 0.1
    expected_ap = 0.25 * 1 + 0.25 * 2 / 3 + 0.25 * 3 / 4 + 0.25 * 4 / 7
    assert auprc(scores, labels) == pytest.approx(expected_ap)
    assert auprc(scores, labels) == pytest.approx(brute_auprc(scores, labels))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_auprc_random_with_many_ties_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 5, size=40).astype(float).tolist()   # heavy ties
    labels = (rng.random(40) < 0.4).astype(int).tolist()
    assert auroc(scores, labels) == pytest.approx(brute_auroc(scores, labels))
    assert auprc(scores, labels) == pytest.approx(brute_auprc(scores, labels))


def test_ranking_extremes_and_undefined():
    assert auroc([3, 2, 1], [1, 0, 0]) == 1.0
    assert auroc([1, 2, 3], [1, 0, 0]) == 0.0
    assert auroc([1, 1, 1], [1, 0, 1]) == 0.5
    assert auprc([1, 1, 1, 1], [1, 0, 0, 0]) == pytest.approx(0.25)
    assert math.isnan(auroc([1, 2], [1, 1]))
    assert math.isnan(auprc([1, 2], [0, 0]))


def test_voxel_level_with_mask_and_accumulator():
    heat = torch.zeros(2, 1, 4, 4, 4)
    lesion = torch.zeros_like(heat, dtype=torch.bool)
    lesion[0, 0, 1, 1, 1] = True
    heat[0, 0, 1, 1, 1] = 1.0
    heat[1, 0, 3, 3, 3] = 2.0     # false alarm outside the brain
    brain = torch.ones_like(lesion)
    brain[:, :, 3] = False
    assert auroc(heat, lesion) < 1.0
    assert auroc(heat, lesion, mask=brain) == 1.0
    acc = RankingMetrics()
    acc.update(heat[:1], lesion[:1], brain[:1])
    acc.update(heat[1:], lesion[1:], brain[1:])
    assert acc.aggregate() == pytest.approx({"auroc": 1.0, "auprc": 1.0})
