"""Content understanding: media and text in, per-modality vectors, fused vectors and tags out."""

from avrec.content.fusion import ContentProjection, fuse
from avrec.content.store import ContentStore
from avrec.content.tags import Tag, ZeroShotTagger

__all__ = ["ContentProjection", "ContentStore", "Tag", "ZeroShotTagger", "fuse"]
