"""Media: resolving references (paths, URLs) and decoding with PyAV."""

from avrec.media.decode import (
    Frame,
    MediaInfo,
    StreamInfo,
    audio_track,
    cover_image,
    key_frames,
    load_image,
    probe,
)
from avrec.media.source import MediaSource

__all__ = [
    "Frame",
    "MediaInfo",
    "MediaSource",
    "StreamInfo",
    "audio_track",
    "cover_image",
    "key_frames",
    "load_image",
    "probe",
]
