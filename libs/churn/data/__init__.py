"""Raw data: synthetic generator (`generate`), validation (`validate`), user x day grid (`prepare`)."""
