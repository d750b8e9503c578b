"""Faust application, topics, thin agents, ingest adapters, embedded broker and CLI."""
