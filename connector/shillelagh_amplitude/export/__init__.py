"""From Amplitude's Export API to stored hours: the HTTP client, the archive decoder and the loader."""
