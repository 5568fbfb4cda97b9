"""The care transitions hub: ingest, brokers, CLI, observability around the streams."""
