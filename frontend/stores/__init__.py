"""Stored state behind the APIs: the Responses store and the media store."""
