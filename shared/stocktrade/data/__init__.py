"""Market data in memory: bar arrays and the CSV bar format."""
