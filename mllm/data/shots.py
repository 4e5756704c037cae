"""Shot boundaries with PySceneDetect's `ContentDetector` (hard cuts), decoded by the same PyAV.

`detect_shots(video, start, end)` returns the shots of `[start, end]` as `(start, end)` seconds
on the video's own timeline (frame presentation times, so variable frame rates are fine); a window
without a cut is one shot. PySceneDetect downscales frames itself (to about 256 px wide) before
comparing them; it decodes every frame of the window, so the cost grows with the window's length.
"""

from __future__ import annotations

from mllm.data.frame_samplers import Shot
from mllm.data.video import VideoDecodeError, VideoFile


def detect_shots(video: VideoFile, start: float, end: float, *, threshold: float = 27.0,
                 min_shot_seconds: float = 0.5) -> list[Shot]:
    """Shots of `[start, end]` of an open `video`. Raises `VideoDecodeError` if detection fails."""
    from scenedetect import ContentDetector, SceneManager
    from scenedetect.backends.pyav import VideoStreamAv

    try:
        stream = VideoStreamAv(video.reader(), name=video.name, suppress_output=True)
        if start > 0:
            stream.seek(start)
        manager = SceneManager()
        manager.add_detector(ContentDetector(threshold=threshold, min_scene_len=float(min_shot_seconds)))
        manager.detect_scenes(stream, end_time=end)
        cuts = [shot_start.seconds for shot_start, _ in manager.get_scene_list()[1:]]
    except VideoDecodeError:
        raise
    except Exception as error:  # PySceneDetect raises its own errors, FFmpeg's and OSError
        raise VideoDecodeError(video.name, f"shot detection failed ({type(error).__name__}: {error})") from error
    bounds = [start] + [t for t in cuts if start < t < end] + [end]
    return list(zip(bounds[:-1], bounds[1:]))
