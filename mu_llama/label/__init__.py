"""Caption whole collections and auto-label datasets (`mu-llama label`): streaming, resumable, cached, bad-file
tolerant, on a local decode pool or on Ray Data. See pipeline.label_collection."""

from mu_llama.label.labelers import (
                                     DEFAULT_QUESTIONS,
                                     Clip,
                                     Labeler,
                                     LabelerInfo,
                                     LabelerSpec,
                                     label_isolating,
)
from mu_llama.label.mullama import MuLlamaLabeler
from mu_llama.label.pipeline import LabelOptions, LabelSummary, label_collection
from mu_llama.label.sources import DatasetSource, FileSource, Item, open_source

__all__ = [
                                     "DEFAULT_QUESTIONS",
                                     "Clip",
                                     "DatasetSource",
                                     "FileSource",
                                     "Item",
                                     "LabelOptions",
                                     "LabelSummary",
                                     "Labeler",
                                     "LabelerInfo",
                                     "LabelerSpec",
                                     "MuLlamaLabeler",
                                     "label_collection",
                                     "label_isolating",
                                     "open_source",
]
