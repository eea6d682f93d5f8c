"""The online scoring API (FastAPI): validation from the feature schema, hot model reload, metrics."""
