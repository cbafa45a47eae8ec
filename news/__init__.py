"""News that is not a stream: the health of each news source from its polls."""
