"""Data: the data model, event weighting, vocabularies, the Dataset and public dataset loaders."""

from avrec.data.dataset import Dataset
from avrec.data.schema import Event, EventType, Item, MediaRef, Person, Role, User
from avrec.data.vocab import Vocabulary
from avrec.data.weighting import EventRule, EventWeighting

__all__ = [
    "Dataset",
    "Event",
    "EventRule",
    "EventType",
    "EventWeighting",
    "Item",
    "MediaRef",
    "Person",
    "Role",
    "User",
    "Vocabulary",
]
