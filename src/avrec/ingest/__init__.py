"""Ingestion: readers (CSV/TSV, JSONL, Parquet), validation, rejects, cleaning, anomalies."""

from avrec.ingest.anomaly import AnomalyReport, detect_anomalies, user_activity_features
from avrec.ingest.pipeline import IngestReport, ingest_file, ingest_frames
from avrec.ingest.readers import detect_format, read_batches
from avrec.ingest.validate import parse_mapping

__all__ = [
    "AnomalyReport",
    "IngestReport",
    "detect_anomalies",
    "detect_format",
    "ingest_file",
    "ingest_frames",
    "parse_mapping",
    "read_batches",
    "user_activity_features",
]
