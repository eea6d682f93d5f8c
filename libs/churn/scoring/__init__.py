"""Batch scoring with the production model (sharded by a stable user hash) and the score distribution."""
