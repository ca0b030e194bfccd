"""The per-hour Arrow store: one file per upload hour, locally."""
