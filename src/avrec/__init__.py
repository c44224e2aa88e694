"""avrec: a recommendation engine for audio and video catalogues."""

from avrec.data import Dataset, EventWeighting, Vocabulary
from avrec.errors import AvrecError
from avrec.storage import open_store

__version__ = "0.1.0"

__all__ = ["AvrecError", "Dataset", "EventWeighting", "Vocabulary", "__version__", "open_store"]
