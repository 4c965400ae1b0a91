"""What a detector returns: the kept boxes of one video (paper Sec. 3.1; ``docs/method.md``, "Detection").

Both detectors (:mod:`ssmtl_core.detect`'s motion detector and :mod:`ssmtl_core.yolo`'s COCO detector), the
hybrid of the two, the detection cache, the object sampler and the scorer all pass :class:`Detections`
around; it lives here, below all of them, so that none of them imports another for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COCO_CLASSES = 80
"""The COCO detector's class scores per box (the detector part of the distillation target)."""


@dataclass
class Detections:
    """The kept boxes of one video.

    Attributes:
        frame: (N,) int32 frame index of each box.
        boxes: (N, 4) float32 x1, y1, x2, y2 in pixels of the original frame.
        scores: (N,) float32 confidence.
        classes: (N,) int16 COCO class id (-1 for detectors without classes).
        class_scores: (N, 80) float16 per-class scores, or (N, 0) without classes.
    """

    frame: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    class_scores: np.ndarray

    def __len__(self) -> int:
        return len(self.frame)

    @classmethod
    def empty(cls, num_classes: int = 0) -> Detections:
        return cls(np.zeros(0, np.int32), np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                   np.zeros(0, np.int16), np.zeros((0, num_classes), np.float16))

    @classmethod
    def concat(cls, parts: list[Detections], num_classes: int = 0) -> Detections:
        if not parts:
            return cls.empty(num_classes)
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in
                     ("frame", "boxes", "scores", "classes", "class_scores")))

    def select(self, mask: np.ndarray) -> Detections:
        return Detections(self.frame[mask], self.boxes[mask], self.scores[mask], self.classes[mask],
                          self.class_scores[mask])

    def in_frame(self, index: int) -> Detections:
        return self.select(self.frame == index)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"frame": self.frame, "boxes": self.boxes, "scores": self.scores, "classes": self.classes,
                "class_scores": self.class_scores}
