"""The faust app: topics, tables, agents; and the pure care rules the agents apply."""
