"""SQL over the store: the shillelagh adapter, its tables, the columnar cursor and the amplitude:// dialect."""
