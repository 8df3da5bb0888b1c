"""Ingest: read → clean → validate → load, one small function per step."""
