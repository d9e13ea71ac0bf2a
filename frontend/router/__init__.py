"""Worker selection for a request."""
