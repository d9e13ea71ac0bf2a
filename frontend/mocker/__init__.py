"""`python -m frontend.mocker`: the mock engine worker (frontend/engines/mocker/)."""
