"""Feature maths that is not a stream: the feature definitions and their batch reference."""
