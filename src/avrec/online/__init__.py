"""The online loop: what was shown (impressions) and what people did with it.

- :mod:`avrec.online.impressions`: every served list logged as impressions, through a
  per-process journal and a background thread into the store.
- :mod:`avrec.online.metrics`: CTR, completion, watch time, likes, coverage and novelty of
  what was shown, per surface, model version and variant.
"""

from avrec.online.impressions import ImpressionLog
from avrec.online.metrics import online_metrics

__all__ = ["ImpressionLog", "online_metrics"]
