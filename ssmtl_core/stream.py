"""Detection and scoring of one video at once (``ssmtl score-video``; ``docs/method.md``, "Scoring").

Scoring a video one step after the other decodes it twice (once for the detector, once for the crops) and
leaves one step idle while the other runs. :func:`detect_and_score` decodes it once and runs two stages at
the same time: a thread runs the detector over the decoded frames part by part (each detector's
``iter_video``), handing each part's detections through a bounded queue; this thread crops and scores the
objects as they come, in the scorer's own groups of objects (:meth:`~ssmtl_core.score.Scorer.parts`), while
the detector works on the next frames. Both stages spend most of their time in OpenVINO (or OpenCV), which
releases the GIL, so with cores to spare one stage runs while the other does. On two cores it does not pay:
each stage's runtime already uses both cores, and the two stages at once ran slower than one after the other
(17.4 against 20.6 frames/s on Ped2, ``bench/results/infer.json``). :func:`chosen_pipeline` therefore picks
:func:`detect_then_score` (the same single decode, one stage after the other) there, unless asked otherwise
(``score.pipeline``, ``--pipeline``).

The scores are the sequential path's (a test compares them): the same detections (the detectors' parts are
their ``detect_video``'s, a hybrid's merge is frame by frame), the same groups of objects through the same
network, and the ImageNet teacher's logits of the objects that need them computed at the end in one call,
as :func:`~ssmtl_core.score.score_detections` does.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np

from .data.layouts import Video
from .detect import Detector
from .detections import Detections
from .score import ObjectScores, PartScores, Scorer, needed_teacher_logits, score_detections

#: Parts of detections decoded ahead of scoring at most (each ``detect.batch`` frames of a YOLO detector).
QUEUE_PARTS = 8


class DecodedFrames:
    """A video source over frames decoded already (:func:`~ssmtl_core.data.load_frames`: (T, H, W, C), C = 1 for
    grey scenes), read back as the RGB frames a detector reads from the original source.

    Args:
        frames: the decoded frames.
        source: the source they were decoded from (its path and signature).
    """

    def __init__(self, frames: np.ndarray, source):
        self.frames, self.source = frames, source
        self.path = getattr(source, "path", None)
        self.fps = getattr(source, "fps", None)

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def frame_size(self) -> tuple[int, int]:
        return tuple(self.frames.shape[1:3])

    def signature(self) -> str:
        return self.source.signature()

    def read(self, index: int) -> np.ndarray:
        frame = np.asarray(self.frames[index])
        return np.repeat(frame, 3, axis=2) if frame.shape[2] == 1 else frame

    def iter(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        stop = self.num_frames if stop is None else min(stop, self.num_frames)
        for index in range(start, stop):
            yield index, self.read(index)


def decoded_video(video: Video, frames: np.ndarray) -> Video:
    """``video`` read from its decoded ``frames`` instead of its files."""
    return Video(video.name, video.split, DecodedFrames(frames, video.source), video.labels_fn, video.masks_fn)


_DONE = object()


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS tells it, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def chosen_pipeline(pipeline: str, device: str = "cpu", cores: int | None = None) -> str:
    """``overlap`` or ``sequential``: ``score.pipeline`` as asked, or for ``auto`` the one that measured faster on
    such a machine (overlap on a GPU or with more than two CPU cores; see the module's docstring).

    Args:
        pipeline: ``auto``, ``overlap`` or ``sequential``.
        device: the scoring device (``cpu``, ``cuda``, ``cuda:N``).
        cores: the CPU cores to count (default: :func:`usable_cores`).
    """
    if pipeline != "auto":
        return pipeline
    if str(device).startswith("cuda"):
        return "overlap"
    return "overlap" if (usable_cores() if cores is None else cores) > 2 else "sequential"


def detect_then_score(detector: Detector, scorer: Scorer, video: Video, frames: np.ndarray,
                      teacher_logits_for: Callable[[Detections, np.ndarray], np.ndarray] | None = None,
                      progress: bool = False) -> tuple[Detections, ObjectScores, float]:
    """What :func:`detect_and_score` returns, one stage after the other: the detector over the decoded
    ``frames`` (not the files again), then every object scored (:func:`~ssmtl_core.score.score_detections`)."""
    started = time.perf_counter()
    detections = detector.detect_video(decoded_video(video, frames), progress)
    detected = time.perf_counter() - started
    scores = score_detections(scorer, frames, detections, None if teacher_logits_for is None
                              else lambda rows: teacher_logits_for(detections, rows))
    return detections, scores, detected


def detect_and_score(detector: Detector, scorer: Scorer, video: Video, frames: np.ndarray,
                     teacher_logits_for: Callable[[Detections, np.ndarray], np.ndarray] | None = None,
                     progress: bool = False) -> tuple[Detections, ObjectScores, float]:
    """Detect and score every object of ``video`` with both at work at once (see the module's docstring).

    Args:
        detector: from :func:`~ssmtl_core.detect.make_detector`.
        scorer: the trained model's scorer.
        video: the video.
        frames: its decoded frames (the detector reads them, not the files again).
        teacher_logits_for: given the video's detections and rows of them, their ImageNet teacher logits
            (N, 1000); called once at the end, for the objects whose distillation score needs them
            (:meth:`~ssmtl_core.score.Scorer.needs_teacher`).
        progress: the detector's progress bar.

    Returns:
        The detections and their raw task scores (those of ``detector.detect_video`` and
        :func:`~ssmtl_core.score.score_detections`), and the seconds until the detector was done.
    """
    parts: queue.Queue = queue.Queue(QUEUE_PARTS)
    stop = threading.Event()
    started, detected = time.perf_counter(), [0.0]

    def detect() -> None:
        try:
            for _, found in detector.iter_video(decoded_video(video, frames), progress):
                while not stop.is_set():
                    try:
                        parts.put(found, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            detected[0] = time.perf_counter() - started
            parts.put(_DONE)
        except BaseException as exc:  # noqa: BLE001  (handed to the scoring thread, which raises it)
            parts.put(exc)

    worker = threading.Thread(target=detect, name=f"detect {video.key}", daemon=True)
    worker.start()
    found: list[Detections] = []
    scored: list[PartScores] = []
    waiting = Detections.empty()
    try:
        while (item := parts.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            found.append(item)
            waiting = _joined(waiting, item)
            while len(waiting) >= scorer.chunk:  # full groups now; the last, smaller one at the end
                scored.append(scorer.score_part(frames, waiting.select(slice(0, scorer.chunk))))
                waiting = waiting.select(slice(scorer.chunk, None))
    finally:
        stop.set()
        worker.join()
    if len(waiting):
        scored.append(scorer.score_part(frames, waiting))
    detections = _joined_all(found)
    logits = needed_teacher_logits(scorer, detections, None if teacher_logits_for is None
                                   else lambda rows: teacher_logits_for(detections, rows))
    return detections, scorer.finish(detections, scored, logits), detected[0]


def _joined(a: Detections, b: Detections) -> Detections:
    return b if not len(a) else a if not len(b) else Detections.concat([a, b], b.class_scores.shape[1])


def _joined_all(parts: list[Detections]) -> Detections:
    classes = max((p.class_scores.shape[1] for p in parts), default=0)
    return Detections.concat(parts, classes)
