"""Tests of ssmtl_core.metrics: hand-computed toy cases, sklearn agreement, and a brute-force RBDC/TBDC."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ssmtl_core.metrics import (
    Regions,
    Tracks,
    box_iou,
    detection_curve_area,
    frame_roc,
    macro_auc,
    micro_auc,
    per_video_auc,
    rbdc_tbdc,
    read_track_file,
    tracks_from_masks,
    tracks_from_table,
)

# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------

G1 = [0.0, 0.0, 10.0, 10.0]
G2 = [100.0, 100.0, 110.0, 110.0]
FAR = [300.0, 300.0, 310.0, 310.0]  # IoU 0 with G1 and G2


def regions(rows):
    """rows: (video, frame, box, score)."""
    if not rows:
        return Regions.empty()
    return Regions(
        np.array([r[0] for r in rows]),
        np.array([r[1] for r in rows]),
        np.array([r[2] for r in rows], dtype=float),
        np.array([r[3] for r in rows], dtype=float),
    )


def tracks(rows):
    """rows: (video, track, frame, box)."""
    return Tracks(
        np.array([r[0] for r in rows]),
        np.array([r[1] for r in rows]),
        np.array([r[2] for r in rows]),
        np.array([r[3] for r in rows], dtype=float),
    )


# ----------------------------------------------------------------------------------------------------------
# box_iou
# ----------------------------------------------------------------------------------------------------------


def test_box_iou_hand_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], dtype=float)
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 0, 0]], dtype=float)
    iou = box_iou(a, b)
    # [0,0,10,10] vs [5,0,15,10]: intersection 5*10 = 50, union 100 + 100 - 50 = 150 -> 1/3.
    expected = np.array([[1 / 3, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(iou, expected)
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 4)


def test_box_iou_rejects_bad_boxes():
    with pytest.raises(ValueError, match="x2 < x1"):
        box_iou(np.array([[10, 0, 0, 10]]), np.array([G1]))


# ----------------------------------------------------------------------------------------------------------
# 1. an unmatched prediction is a false positive
# ----------------------------------------------------------------------------------------------------------


def test_unmatched_prediction_is_false_positive():
    gt = tracks([(0, 0, 0, G1)])
    # P_far overlaps G1 by 1 pixel: intersection 1, union 100 + 100 - 1 = 199, IoU 0.005 < beta = 0.1.
    p_far = (0, 0, [9.0, 9.0, 19.0, 19.0], 0.9)
    p_hit = (0, 0, G1, 0.5)
    out = rbdc_tbdc(regions([p_far, p_hit]), gt, num_frames=4)
    # Score 0.9: FP = 1 -> (0.25, 0). Score 0.5: G1 matched -> (0.25, 1).
    # Curve (0,0) -> (0.25,0) -> (0.25,1) -> extended to (1,1): area = 0.25 * 0 + 0.75 * 1 = 0.75.
    # The single track has 1 region, needs max(1, ceil(0.1)) = 1 -> same TBDC curve.
    np.testing.assert_allclose(out["raw_fpr"], [0.25, 0.25])
    np.testing.assert_allclose(out["raw_rbdc"], [0.0, 1.0])
    assert out["rbdc"] == pytest.approx(0.75)
    assert out["tbdc"] == pytest.approx(0.75)
    # Without the unmatched prediction both criteria are perfect: the FP alone lowered them.
    clean = rbdc_tbdc(regions([p_hit]), gt, num_frames=4)
    assert clean["rbdc"] == pytest.approx(1.0) and clean["tbdc"] == pytest.approx(1.0)


def test_prediction_in_frame_or_video_without_gt_is_false_positive():
    gt = tracks([(0, 0, 0, G1)])
    # Same box as G1 but in frame 1 (score 0.9), then in video 1 (0.8), then the real hit (0.7).
    rows = [(0, 1, G1, 0.9), (1, 0, G1, 0.8), (0, 0, G1, 0.7)]
    out = rbdc_tbdc(regions(rows), gt, num_frames=4)
    # Points (0.25,0), (0.5,0), (0.5,1) -> area = 0.5 * 1 = 0.5.
    np.testing.assert_allclose(out["raw_fpr"], [0.25, 0.5, 0.5])
    assert out["rbdc"] == pytest.approx(0.5)


# ----------------------------------------------------------------------------------------------------------
# 2. a track detected at exactly alpha
# ----------------------------------------------------------------------------------------------------------


def _long_track(n_regions):
    return tracks([(0, 7, f, G1) for f in range(n_regions)])


@pytest.mark.parametrize(
    ("n_regions", "n_hits", "alpha", "rbdc", "tbdc"),
    [
        # 10 regions, 1 hit: 1 >= 0.1 * 10 -> detected. Curve jumps at FPR 0 -> areas = the rates.
        (10, 1, 0.1, 0.1, 1.0),
        # 20 regions, 1 hit: 1 < 0.1 * 20 = 2 -> not detected.
        (20, 1, 0.1, 0.05, 0.0),
        # 20 regions, 2 hits: exactly alpha again -> detected.
        (20, 2, 0.1, 0.1, 1.0),
        # 100 regions, 55 hits at alpha 0.55: 0.55 * 100 = 55.00000000000001 in floating point, yet 55 hits
        # are exactly alpha of the track -> detected; 54 hits are not.
        (100, 55, 0.55, 0.55, 1.0),
        (100, 54, 0.55, 0.54, 0.0),
    ],
)
def test_track_detected_at_exactly_alpha(n_regions, n_hits, alpha, rbdc, tbdc):
    preds = regions([(0, f, G1, 1.0) for f in range(n_hits)])
    out = rbdc_tbdc(preds, _long_track(n_regions), num_frames=n_regions, alpha=alpha)
    # No false positives: the single point is (0, rate) and the curve is flat at that rate up to FPR 1.
    assert out["rbdc"] == pytest.approx(rbdc)
    assert out["tbdc"] == pytest.approx(tbdc)


def test_alpha_zero_still_needs_one_detected_region():
    # Two one-region tracks, only the first is hit. alpha = 0 must not count the untouched track:
    # TBDC curve (0, 0.5) flat to FPR 1 -> 0.5 (counting it would give 1.0).
    gt = tracks([(0, 0, 0, G1), (0, 1, 0, G2)])
    out = rbdc_tbdc(regions([(0, 0, G1, 1.0)]), gt, num_frames=1, alpha=0.0)
    assert out["tbdc"] == pytest.approx(0.5)


def test_track_detection_when_reached_by_lower_scores():
    # Track of 4 regions, alpha 0.5 -> needs 2 hits. Hits at scores 0.9 and 0.5, an FP at 0.7; 2 frames.
    gt = _long_track(4)
    rows = [(0, 0, G1, 0.9), (0, 2, FAR, 0.7), (0, 1, G1, 0.5)]
    out = rbdc_tbdc(regions(rows), gt, num_frames=2, alpha=0.5)
    # Points: 0.9 -> (0, rbdc 0.25, tbdc 0); 0.7 -> (0.5, 0.25, 0); 0.5 -> (0.5, 0.5, 1).
    np.testing.assert_allclose(out["raw_tbdc"], [0.0, 0.0, 1.0])
    # RBDC area = 0.5 * 0.25 + 0.5 * 0.5 = 0.375; TBDC area = 0.5 * 0 + 0.5 * 1 = 0.5.
    assert out["rbdc"] == pytest.approx(0.375)
    assert out["tbdc"] == pytest.approx(0.5)


# ----------------------------------------------------------------------------------------------------------
# 3. the published rules: duplicates are neither TP nor FP; one prediction detects every region it overlaps
# ----------------------------------------------------------------------------------------------------------


def test_duplicate_on_a_detected_region_is_neither_true_nor_false_positive():
    gt = tracks([(0, 0, 0, G1), (0, 1, 0, G2)])
    dup = [1.0, 1.0, 11.0, 11.0]  # IoU with G1 = 81 / 119 = 0.68, G1 already detected by then
    rows = [(0, 0, G1, 0.9), (0, 0, dup, 0.8), (0, 0, G2, 0.7)]
    out = rbdc_tbdc(regions(rows), gt, num_frames=2)
    # 0.9: G1 detected -> (0, 0.5). 0.8: duplicate, no new region, not a FP -> (0, 0.5). 0.7: G2 -> (0, 1).
    np.testing.assert_allclose(out["raw_fpr"], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(out["raw_rbdc"], [0.5, 0.5, 1.0])
    assert out["rbdc"] == pytest.approx(1.0)
    assert out["tbdc"] == pytest.approx(1.0)
    # The stricter one-to-one rule counts the duplicate as a FP: (0, .5), (.5, .5), (.5, 1) -> 0.75.
    strict = rbdc_tbdc(regions(rows), gt, num_frames=2, rules="one_to_one")
    np.testing.assert_allclose(strict["raw_fpr"], [0.0, 0.5, 0.5])
    assert strict["rbdc"] == pytest.approx(0.75)


def test_one_box_over_two_regions_detects_both():
    # Two overlapping GT regions (two people side by side), one prediction covering both:
    # IoU(P, A) = 100 / 200 = 0.5, IoU(P, B) = 100 / 200 = 0.5, both >= beta -> both detected at once.
    a, b = [0.0, 0.0, 10.0, 10.0], [10.0, 0.0, 20.0, 10.0]
    gt = tracks([(0, 0, 0, a), (0, 1, 0, b)])
    out = rbdc_tbdc(regions([(0, 0, [0.0, 0.0, 20.0, 10.0], 0.9)]), gt, num_frames=1)
    np.testing.assert_allclose(out["raw_rbdc"], [1.0])
    np.testing.assert_allclose(out["raw_tbdc"], [1.0])
    assert out["rbdc"] == pytest.approx(1.0) and out["tbdc"] == pytest.approx(1.0)
    # One-to-one: the box takes A only (first of the tied IoUs); B stays undetected.
    assert rbdc_tbdc(regions([(0, 0, [0.0, 0.0, 20.0, 10.0], 0.9)]), gt, 1, rules="one_to_one")[
        "rbdc"
    ] == pytest.approx(0.5)
    # With beta = 0.6 neither overlap is enough: one false positive in one frame -> (1, 0): area 0.
    high = rbdc_tbdc(regions([(0, 0, [0.0, 0.0, 20.0, 10.0], 0.9)]), gt, num_frames=1, beta=0.6)
    np.testing.assert_allclose(high["raw_fpr"], [1.0])
    assert high["rbdc"] == pytest.approx(0.0)


def test_ties_enter_together_whatever_their_input_order():
    # Three predictions tied at 0.5 in one frame (a FP, a box on G1, a duplicate on G1) and one on G2 at 0.9.
    gt = tracks([(0, 0, 0, G1), (0, 1, 0, G2)])
    rows = [(0, 0, G2, 0.9), (0, 0, FAR, 0.5), (0, 0, G1, 0.5), (0, 0, [1.0, 1.0, 11.0, 11.0], 0.5)]
    outs = [rbdc_tbdc(regions([rows[i] for i in perm]), gt, num_frames=4) for perm in ([0, 1, 2, 3], [3, 2, 1, 0])]
    for out in outs:  # one point per distinct score: (0, 0.5) then (0.25, 1.0)
        np.testing.assert_allclose(out["raw_fpr"], [0.0, 0.25])
        np.testing.assert_allclose(out["raw_rbdc"], [0.5, 1.0])
        np.testing.assert_allclose(out["thresholds"], [0.9, 0.5])
    assert outs[0]["rbdc"] == outs[1]["rbdc"] == pytest.approx(0.5 * 0.25 * 1.5 + 0.75)


def test_second_prediction_takes_next_unmatched_region_under_one_to_one():
    # Two overlapping GT regions; two identical predictions. One-to-one: the first takes G1 (IoU 1 > 1/3),
    # the second finds G1 taken and takes G2 (IoU 1/3 >= beta). Published: the first detects both, the
    # second is a duplicate. Both rules: RBDC 1, no false positive.
    g2 = [5.0, 0.0, 15.0, 10.0]
    gt = tracks([(0, 0, 0, G1), (0, 1, 0, g2)])
    preds = regions([(0, 0, G1, 0.9), (0, 0, G1, 0.8)])
    one = rbdc_tbdc(preds, gt, num_frames=1, rules="one_to_one")
    np.testing.assert_allclose(one["raw_rbdc"], [0.5, 1.0])
    pub = rbdc_tbdc(preds, gt, num_frames=1)
    np.testing.assert_allclose(pub["raw_rbdc"], [1.0, 1.0])
    assert one["rbdc"] == pub["rbdc"] == pytest.approx(1.0)
    # With beta = 0.5 the second one no longer reaches G2 (1/3 < 0.5) -> one-to-one: FP; published:
    # a duplicate of G1, no FP, G2 never detected.
    strict = rbdc_tbdc(preds, gt, num_frames=1, beta=0.5, rules="one_to_one")
    np.testing.assert_allclose(strict["raw_fpr"], [0.0, 1.0])
    assert strict["rbdc"] == pytest.approx(0.5)
    pub_strict = rbdc_tbdc(preds, gt, num_frames=1, beta=0.5)
    np.testing.assert_allclose(pub_strict["raw_fpr"], [0.0, 0.0])
    assert pub_strict["rbdc"] == pytest.approx(0.5)


def test_one_to_one_takes_highest_iou_region_not_first_listed():
    # GT listed as A = [2,0,12,10], B = [0,0,10,10]; beta = 0.5.
    # P1 = [0,0,10,10] (score 0.9): IoU(A) = 80/120 = 0.67, IoU(B) = 1 -> takes B (highest), not A (first).
    # P2 = [4,0,14,10] (score 0.8): IoU(A) = 80/120 = 0.67, IoU(B) = 60/140 = 0.43 < 0.5 -> takes A.
    # Points (0, 0.5), (0, 1.0) -> RBDC 1. Had P1 taken A, P2 would be a false positive: (1, 0.5) -> 0.5.
    gt = tracks([(0, 0, 0, [2.0, 0.0, 12.0, 10.0]), (0, 1, 0, G1)])
    preds = regions([(0, 0, G1, 0.9), (0, 0, [4.0, 0.0, 14.0, 10.0], 0.8)])
    out = rbdc_tbdc(preds, gt, num_frames=1, beta=0.5, rules="one_to_one")
    np.testing.assert_allclose(out["raw_fpr"], [0.0, 0.0])
    assert out["rbdc"] == pytest.approx(1.0)


def test_unknown_rules_are_refused():
    with pytest.raises(ValueError, match="rules"):
        rbdc_tbdc(regions([(0, 0, G1, 1.0)]), tracks([(0, 0, 0, G1)]), num_frames=1, rules="loose")


# ----------------------------------------------------------------------------------------------------------
# 4. cut at / extension to FPR 1
# ----------------------------------------------------------------------------------------------------------


def test_curve_cut_beyond_fpr_one():
    gt = tracks([(0, 0, 0, G1), (0, 1, 0, G2)])
    # 0.9: G1 -> (0, 0.5). Tie group at 0.5: three FPs (frame 1) and G2 -> one point (1.5, 1.0).
    rows = [(0, 0, G1, 0.9), (0, 1, FAR, 0.5), (0, 1, G1, 0.5), (0, 1, G2, 0.5), (0, 0, G2, 0.5)]
    out = rbdc_tbdc(regions(rows), gt, num_frames=2)
    np.testing.assert_allclose(out["raw_fpr"], [0.0, 1.5])
    # Cut at 1 on the segment (0, 0.5) -> (1.5, 1.0): y = 0.5 + 0.5 * (1 / 1.5) = 5/6.
    # Area = (0.5 + 5/6) / 2 * 1 = 2/3.
    np.testing.assert_allclose(out["fpr"], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(out["rbdc_curve"], [0.0, 0.5, 5 / 6])
    assert out["rbdc"] == pytest.approx(2 / 3)
    assert out["tbdc"] == pytest.approx(2 / 3)


def test_curve_extended_when_it_ends_before_fpr_one():
    gt = tracks([(0, 0, 0, G1), (0, 1, 0, G2)])
    rows = [(0, 1, FAR, 0.9), (0, 0, G1, 0.8)]  # G2 is never detected
    out = rbdc_tbdc(regions(rows), gt, num_frames=4)
    # Points (0.25, 0), (0.25, 0.5); extended to (1, 0.5): area = 0.75 * 0.5 = 0.375.
    np.testing.assert_allclose(out["fpr"], [0.0, 0.25, 0.25, 1.0])
    np.testing.assert_allclose(out["rbdc_curve"], [0.0, 0.0, 0.5, 0.5])
    assert out["rbdc"] == pytest.approx(0.375)


def test_detection_curve_area_hand_cases():
    # Diagonal (0,0) -> (2,1): cut at 1 gives y = 0.5, area 0.25.
    area, x, y = detection_curve_area([2.0], [1.0])
    assert area == pytest.approx(0.25)
    np.testing.assert_allclose(x, [0.0, 1.0])
    np.testing.assert_allclose(y, [0.0, 0.5])
    # A vertical step exactly at FPR 1 is kept whole: (0,0) -> (1,0) -> (1,1) has area 0.
    area, x, y = detection_curve_area([1.0, 1.0, 3.0], [0.0, 1.0, 1.0])
    assert area == pytest.approx(0.0)
    np.testing.assert_allclose(y, [0.0, 0.0, 1.0])
    # max_fpr = 0.5 normalises by 0.5: (0,0) -> (0,1) gives 1.0.
    assert detection_curve_area([0.0], [1.0], max_fpr=0.5)[0] == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------------------
# edge cases of rbdc_tbdc
# ----------------------------------------------------------------------------------------------------------


def test_rbdc_edge_cases():
    gt = tracks([(0, 0, 0, G1)])
    out = rbdc_tbdc(Regions.empty(), gt, num_frames=3)
    assert out["rbdc"] == 0.0 and out["tbdc"] == 0.0
    with pytest.raises(ValueError, match="without ground-truth regions"):
        rbdc_tbdc(regions([(0, 0, G1, 1.0)]), Tracks.empty(), num_frames=3)
    with pytest.raises(ValueError, match="num_frames"):
        rbdc_tbdc(regions([(0, 0, G1, 1.0)]), gt, num_frames=0)
    with pytest.raises(ValueError, match="expected 2 entries"):
        Regions(np.array([0, 0]), np.array([0, 0]), np.array([G1, G2]), np.array([1.0]))


def test_concat():
    a = regions([(0, 0, G1, 0.9)])
    b = regions([(1, 3, G2, 0.4), (1, 4, G2, 0.2)])
    both = Regions.concat([a, b])
    assert len(both) == 3
    np.testing.assert_array_equal(both.video, [0, 1, 1])
    np.testing.assert_allclose(both.scores, [0.9, 0.4, 0.2])
    t = Tracks.concat([tracks([(0, 0, 0, G1)]), tracks([(1, 0, 0, G1), (1, 0, 1, G1)])])
    assert len(t) == 3 and t.num_tracks == 2  # track 0 of video 0 and track 0 of video 1 differ


# ----------------------------------------------------------------------------------------------------------
# 5. macro AUC with all-abnormal / all-normal videos
# ----------------------------------------------------------------------------------------------------------


def test_macro_auc_padding_hand_values():
    # All-abnormal video: labels 1,1 scores 0, 0.6. Padded: positives {0, 0.6, 1}, negatives {0}.
    # Pairs (pos > neg): 0 vs 0 tie = 0.5, 0.6 > 0 = 1, 1 > 0 = 1 -> 2.5 / 3 = 5/6.
    # All-normal video: labels 0,0 scores 0.5, 1. Padded: negatives {0, 0.5, 1}, positives {1}.
    # Pairs: 1 > 0 = 1, 1 > 0.5 = 1, 1 vs 1 tie = 0.5 -> 2.5 / 3 = 5/6.
    # Mixed video: labels 0,1 scores 0.2, 0.8: positives {0.8, 1}, negatives {0.2, 0}: all 4 pairs -> 1.
    labels = [np.array([1, 1]), np.array([0, 0]), np.array([0, 1])]
    scores = [np.array([0.0, 0.6]), np.array([0.5, 1.0]), np.array([0.2, 0.8])]
    np.testing.assert_allclose(per_video_auc(labels, scores), [5 / 6, 5 / 6, 1.0])
    assert macro_auc(labels, scores) == pytest.approx((5 / 6 + 5 / 6 + 1.0) / 3)


def test_frame_auc_input_errors():
    with pytest.raises(ValueError, match=r"video 1: 3 labels but 4 scores"):
        micro_auc([np.array([0, 1]), np.array([0, 1, 1])], [np.array([0.1, 0.9]), np.zeros(4)])
    with pytest.raises(ValueError, match=r"video 0: 2 labels but 1 scores"):
        macro_auc([np.array([0, 1])], [np.array([0.5])])
    with pytest.raises(ValueError, match="2 videos"):
        micro_auc([np.array([0, 1]), np.array([1])], [np.array([0.1, 0.9])])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        macro_auc([np.array([0, 1])], [np.array([0.5, 3.0])])
    with pytest.raises(ValueError, match="both normal and abnormal"):
        micro_auc([np.array([1, 1])], [np.array([0.5, 0.6])])
    with pytest.raises(ValueError, match="0 \\(normal\\) or 1"):
        micro_auc([np.array([0, 2])], [np.array([0.5, 0.6])])


# ----------------------------------------------------------------------------------------------------------
# 6. agreement with sklearn on random data
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_frame_aucs_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 60, size=6)
    labels = [(rng.random(n) < 0.4).astype(int) for n in lengths]
    labels[0][:] = 1  # an all-abnormal video
    labels[1][:] = 0  # an all-normal video
    scores = [np.round(rng.random(n), 1) for n in lengths]  # rounded: ties
    y, s = np.concatenate(labels), np.concatenate(scores)
    assert micro_auc(labels, scores) == pytest.approx(roc_auc_score(y, s))
    expected = [
        roc_auc_score(np.concatenate([lab, [0, 1]]), np.concatenate([sco, [0.0, 1.0]]))
        for lab, sco in zip(labels, scores, strict=True)
    ]
    np.testing.assert_allclose(per_video_auc(labels, scores), expected)
    assert macro_auc(labels, scores) == pytest.approx(np.mean(expected))
    fpr, tpr, _ = frame_roc(labels, scores)
    assert np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2) == pytest.approx(roc_auc_score(y, s))


# ----------------------------------------------------------------------------------------------------------
# 7. brute force: re-run the greedy matching from scratch at every threshold
# ----------------------------------------------------------------------------------------------------------


def _iou(a, b):
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _brute_force(reg, gt, num_frames, alpha, beta, max_fpr=1.0, rules="published"):
    """Per threshold, matching from scratch; returns (raw fpr, rbdc, tbdc) and both areas."""
    n_gt = len(gt)
    track_keys = sorted({(int(v), int(t)) for v, t in zip(gt.video, gt.track, strict=True)})
    track_len = {k: 0 for k in track_keys}
    for v, t in zip(gt.video, gt.track, strict=True):
        track_len[(int(v), int(t))] += 1
    xs, rs, ts = [], [], []
    for thr in sorted(set(reg.scores.tolist()), reverse=True):
        chosen = [i for i in range(len(reg)) if reg.scores[i] >= thr]
        frames = {}
        for i in chosen:
            frames.setdefault((int(reg.video[i]), int(reg.frame[i])), []).append(i)
        fp = 0
        matched = set()
        for key, idx in frames.items():
            idx.sort(key=lambda i: (-reg.scores[i], i))  # descending score, ties in input order
            gts = [j for j in range(n_gt) if (int(gt.video[j]), int(gt.frame[j])) == key]
            if rules == "published":  # FP iff it overlaps no region; else it detects all it overlaps
                for i in idx:
                    hits = [j for j in gts if _iou(reg.boxes[i], gt.boxes[j]) >= beta]
                    fp += not hits
                    matched.update(hits)
                continue
            for i in idx:
                best, best_iou = None, -1.0
                for j in gts:  # first GT (input order) of the highest IoU among the unmatched ones
                    if j in matched:
                        continue
                    value = _iou(reg.boxes[i], gt.boxes[j])
                    if value >= beta and value > best_iou:
                        best, best_iou = j, value
                if best is None:
                    fp += 1
                else:
                    matched.add(best)
        hits = {k: 0 for k in track_keys}
        for j in matched:
            hits[(int(gt.video[j]), int(gt.track[j]))] += 1
        detected = sum(1 for k in track_keys if hits[k] >= 1 and hits[k] >= alpha * track_len[k] - 1e-9)
        xs.append(fp / num_frames)
        rs.append(len(matched) / n_gt)
        ts.append(detected / len(track_keys))
    return np.array(xs), np.array(rs), np.array(ts), _area(xs, rs, max_fpr), _area(xs, ts, max_fpr)


def _area(xs, ys, max_fpr):
    """Segment-by-segment clipped trapezoids (a formulation independent of the module's)."""
    pts = [(0.0, 0.0)] + list(zip(xs, ys, strict=True))
    total = 0.0
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:], strict=True):
        if x1 <= max_fpr:
            total += (x1 - x0) * (y0 + y1) / 2
        elif x0 < max_fpr:
            y_cut = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
            total += (max_fpr - x0) * (y0 + y_cut) / 2
    if pts[-1][0] < max_fpr:
        total += (max_fpr - pts[-1][0]) * pts[-1][1]
    return total / max_fpr


def _random_case(rng):
    gt_rows = []
    for video in range(2):
        for track in range(rng.integers(1, 4)):
            start = int(rng.integers(0, 5))
            length = int(rng.integers(1, 8))
            x, y = rng.uniform(0, 60, size=2)
            for f in range(start, start + length):
                x, y = x + rng.normal(0, 3), y + rng.normal(0, 3)
                w, h = rng.uniform(8, 25, size=2)
                gt_rows.append((video, track, f, [x, y, x + w, y + h]))
    gt = tracks(gt_rows)
    pred_rows = []
    for j in range(len(gt)):  # zero to three jittered predictions per GT region (duplicates included)
        for _ in range(int(rng.integers(0, 4))):
            jitter = rng.normal(0, 4, size=4)
            box = np.sort(gt.boxes[j].reshape(2, 2) + jitter.reshape(2, 2), axis=0).reshape(-1)
            pred_rows.append((int(gt.video[j]), int(gt.frame[j]), box.tolist(), 0.0))
    for _ in range(int(rng.integers(5, 30))):  # random predictions, some in frames without GT
        x, y = rng.uniform(0, 80, size=2)
        w, h = rng.uniform(5, 30, size=2)
        pred_rows.append((int(rng.integers(0, 3)), int(rng.integers(0, 12)), [x, y, x + w, y + h], 0.0))
    scores = np.round(rng.random(len(pred_rows)), 1)  # 11 levels: many ties, also within frames
    pred_rows = [(v, f, b, float(s)) for (v, f, b, _), s in zip(pred_rows, scores, strict=True)]
    return regions(pred_rows), gt


@pytest.mark.parametrize("seed", range(8))
def test_one_pass_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    reg, gt = _random_case(rng)
    num_frames = int(rng.integers(4, 30))  # small: the curves often cross FPR 1
    for (alpha, beta), rules in itertools.product([(0.1, 0.1), (0.5, 0.3)], ["published", "one_to_one"]):
        out = rbdc_tbdc(reg, gt, num_frames, alpha=alpha, beta=beta, rules=rules)
        xs, rs, ts, rbdc, tbdc = _brute_force(reg, gt, num_frames, alpha, beta, rules=rules)
        np.testing.assert_allclose(out["raw_fpr"], xs)
        np.testing.assert_allclose(out["raw_rbdc"], rs)
        np.testing.assert_allclose(out["raw_tbdc"], ts)
        assert out["rbdc"] == pytest.approx(rbdc)
        assert out["tbdc"] == pytest.approx(tbdc)
        assert 0.0 <= out["rbdc"] <= 1.0 and 0.0 <= out["tbdc"] <= 1.0


def test_brute_force_seeds_exercise_ties_and_cut():
    # Guard against a vacuous brute-force test: the random cases must contain tied scores inside a frame,
    # duplicate predictions (on already-detected regions), predictions overlapping two regions (where the
    # two rules differ), and curves both cut and extended at FPR 1.
    cut = extended = tied = differ = False
    for seed in range(8):
        rng = np.random.default_rng(seed)
        reg, gt = _random_case(rng)
        num_frames = int(rng.integers(4, 30))
        keys = list(zip(reg.video.tolist(), reg.frame.tolist(), reg.scores.tolist(), strict=True))
        tied |= len(set(keys)) < len(keys)
        out = rbdc_tbdc(reg, gt, num_frames)
        cut |= out["raw_fpr"][-1] > 1.0
        extended |= out["raw_fpr"][-1] < 1.0
        differ |= out["rbdc"] != rbdc_tbdc(reg, gt, num_frames, rules="one_to_one")["rbdc"]
    assert cut and extended and tied and differ


def test_large_input_gives_one_point_per_distinct_score():
    # Speed is measured in bench/, never asserted here; this checks the one-pass sweep on a large input.
    rng = np.random.default_rng(0)
    n_gt, n_pred = 10_000, 100_000
    gt_xy = rng.uniform(0, 200, size=(n_gt, 2))
    gt = Tracks(
        rng.integers(0, 10, n_gt),
        rng.integers(0, 50, n_gt),
        rng.integers(0, 2000, n_gt),
        np.concatenate([gt_xy, gt_xy + rng.uniform(10, 50, size=(n_gt, 2))], axis=1),
    )
    xy = rng.uniform(0, 200, size=(n_pred, 2))
    reg = Regions(
        rng.integers(0, 10, n_pred),
        rng.integers(0, 2000, n_pred),
        np.concatenate([xy, xy + rng.uniform(10, 50, size=(n_pred, 2))], axis=1),
        np.round(rng.random(n_pred), 3),
    )
    out = rbdc_tbdc(reg, gt, num_frames=20_000)
    assert out["raw_fpr"].size == np.unique(reg.scores).size
    assert 0.0 < out["rbdc"] < 1.0


# ----------------------------------------------------------------------------------------------------------
# 8. ground-truth tracks from masks and from track files
# ----------------------------------------------------------------------------------------------------------


def test_tracks_from_masks_two_moving_blobs():
    masks = np.zeros((5, 64, 64), dtype=bool)
    expected = {0: [], 1: []}
    for t in range(5):
        ax, ay = 5 + 2 * t, 5  # blob A: 8x8, moving right by 2 px per frame
        masks[t, ay : ay + 8, ax : ax + 8] = True
        expected[0].append([ax, ay, ax + 8, ay + 8])
        bx, by = 40, 30 + 3 * t  # blob B: 6 wide, 10 tall, moving down by 3 px per frame
        masks[t, by : by + 10, bx : bx + 6] = True
        expected[1].append([bx, by, bx + 6, by + 10])
    masks[2, 60:62, 0:2] = True  # a 4-pixel speck, below min_area = 10: ignored
    out = tracks_from_masks(masks, video=3)
    assert len(out) == 10
    assert out.num_tracks == 2
    np.testing.assert_array_equal(out.video, 3)
    ids = {}
    for k in range(len(out)):
        ids.setdefault(int(out.track[k]), []).append((int(out.frame[k]), out.boxes[k].tolist()))
    assert len(ids) == 2
    got = sorted(ids.values(), key=lambda rows: rows[0][1][0])  # blob A has the smaller x
    for blob, rows in zip((0, 1), got, strict=True):
        assert [f for f, _ in rows] == [0, 1, 2, 3, 4]
        assert [b for _, b in rows] == expected[blob]


def test_tracks_from_masks_gap_starts_new_track():
    masks = np.zeros((3, 20, 20), dtype=bool)
    masks[0, 2:8, 2:8] = True
    masks[2, 2:8, 2:8] = True  # frame 1 empty: the object reappears as a new track
    out = tracks_from_masks(masks)
    np.testing.assert_array_equal(out.frame, [0, 2])
    assert out.num_tracks == 2


def test_tracks_from_masks_split_links_one_region_only():
    # Frame 0: one blob, box [0,0,20,10]. Frame 1: it splits into [0,0,12,10] (IoU 120/200 = 0.6) and
    # [14,0,20,10] (IoU 60/200 = 0.3). The previous region continues one track only: the higher IoU keeps
    # track 0, the other starts track 1.
    masks = np.zeros((2, 16, 24), dtype=bool)
    masks[0, 0:10, 0:20] = True
    masks[1, 0:10, 0:12] = True
    masks[1, 0:10, 14:20] = True
    out = tracks_from_masks(masks)
    assert out.num_tracks == 2
    np.testing.assert_array_equal(out.frame, [0, 1, 1])
    np.testing.assert_allclose(out.boxes, [[0, 0, 20, 10], [0, 0, 12, 10], [14, 0, 20, 10]])
    np.testing.assert_array_equal(out.track, [0, 0, 1])


def test_read_track_file(tmp_path):
    comma = tmp_path / "01_0014.csv"
    comma.write_text(
        "track_id,frame_id,x_min,y_min,x_max,y_max\n"
        "0, 10, 1, 2, 11, 22\n"
        "0, 11, 2, 2, 12, 22\n"
        "\n"
        "# a comment line\n"
        "3, 11, 50.5, 60, 70, 90\n"
    )
    t = read_track_file(comma, video=4)
    assert len(t) == 3 and t.num_tracks == 2
    np.testing.assert_array_equal(t.video, [4, 4, 4])
    np.testing.assert_array_equal(t.track, [0, 0, 3])
    np.testing.assert_array_equal(t.frame, [10, 11, 11])
    np.testing.assert_allclose(t.boxes, [[1, 2, 11, 22], [2, 2, 12, 22], [50.5, 60, 70, 90]])

    spaces = tmp_path / "tracks.txt"
    spaces.write_text("1 0 0 0 5 5\n1\t1 1 0 6 5\n")
    s = read_track_file(spaces, video=0)
    np.testing.assert_array_equal(s.frame, [0, 1])
    np.testing.assert_allclose(s.boxes[1], [1, 0, 6, 5])

    bad = tmp_path / "bad.txt"
    bad.write_text("1 0 0 0 5 5\n1 1 0 6\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: expected 6 fields"):
        read_track_file(bad, video=0)


def test_tracks_from_table():
    t = tracks_from_table([[2, 5, 0, 0, 4, 4], [2, 6, 1, 0, 5, 4]], video=1)
    np.testing.assert_array_equal(t.track, [2, 2])
    np.testing.assert_array_equal(t.frame, [5, 6])
    with pytest.raises(ValueError, match="6 columns"):
        tracks_from_table([[1, 2, 3]])
