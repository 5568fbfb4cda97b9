"""Wire formats in and out. Pure functions: no Kafka, no faust, no environment, no clock."""
