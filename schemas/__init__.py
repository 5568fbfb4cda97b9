"""Contracts of the hub: canonical event, outputs, errors and the topic catalogue.

Pure: pydantic models and constants only; no Kafka, no environment, no clock.
"""
