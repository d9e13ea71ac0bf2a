"""The HTTP gateway: a Granian RSGI application and one handler module per API."""
