"""The lake: partitioned Parquet of events and sessions that other engines query, published from the hour store."""
